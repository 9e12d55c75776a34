//! Frames follow async computations across `.await` points and threads;
//! concurrent tasks record in isolation; cached futures are `Send`.

#[macro_use]
mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use common::Runs;
use ultracache::{
    cached, capture_future, dependents, invalidate, invalidate_async, tracks, Dep, Trackable,
};

model!(Post, "async.post");

fn post(id: i64) -> Post {
    Post::numbered(id)
}

#[tracks]
async fn load(id: i64) -> Post {
    tokio::task::yield_now().await;
    post(id)
}

static PAGE_RUNS: Runs = Runs::new();

#[cached(forever)]
async fn page(a: i64, b: i64) -> String {
    PAGE_RUNS.hit();
    let first = load(a).await;
    tokio::task::yield_now().await;
    let second = load(b).await;
    format!("{} {}", first.title, second.title)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_an_await_are_recorded() {
    assert_eq!(page(1, 2).await, "post 1 post 2");
    assert_eq!(page(1, 2).await, "post 1 post 2");
    assert_eq!(PAGE_RUNS.get(), 1);
    invalidate(&post(2)); // read after two awaits
    page(1, 2).await;
    assert_eq!(PAGE_RUNS.get(), 2);
}

static WRITTEN_RUNS: Runs = Runs::new();

#[cached(forever)]
async fn written_page(id: i64) -> String {
    WRITTEN_RUNS.hit();
    load(id).await.title
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_async_drops_what_read_the_object() {
    written_page(30).await;
    written_page(31).await;
    written_page(30).await;
    assert_eq!(WRITTEN_RUNS.get(), 2);
    assert_eq!(invalidate_async(&post(30)).await, 1);
    written_page(30).await;
    written_page(31).await;
    assert_eq!(
        WRITTEN_RUNS.get(),
        3,
        "only post 30's page was computed again"
    );
}

fn names(deps: &[Dep]) -> Vec<String> {
    deps.iter().map(ToString::to_string).collect()
}

#[cached(forever)]
async fn one(id: i64) -> String {
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    load(id).await.title
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_record_in_isolation() {
    let tasks: Vec<_> = (10..30)
        .map(|id| tokio::spawn(capture_future(one(id))))
        .collect();
    for (id, task) in (10..30).zip(tasks) {
        let (title, deps) = task.await.unwrap();
        assert_eq!(title, format!("post {id}"));
        assert_eq!(names(&deps), [format!("async.post:{id}")]);
        assert_eq!(dependents(&post(id).dep()), 1);
    }
}

/// Pending on its first poll, ready on its second.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

#[tracks]
fn load_sync(id: i64) -> Post {
    post(id)
}

#[cached(forever)]
async fn moves_threads(a: i64, b: i64) -> i64 {
    let first = load_sync(a).id;
    YieldOnce(false).await;
    first + load_sync(b).id
}

#[test]
fn a_future_polled_on_two_threads_keeps_one_frame() {
    let mut fut = Box::pin(capture_future(moves_threads(40, 41)));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        fut.as_mut().poll(&mut cx).is_pending(),
        "first poll, this thread"
    );
    let (value, deps) = std::thread::spawn(move || {
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("second poll completes"),
        }
    })
    .join()
    .unwrap();
    assert_eq!(value, 81);
    assert_eq!(names(&deps), ["async.post:40", "async.post:41"]);
    // Nothing leaked into this thread's frames or the other's.
    assert_eq!(dependents(&post(40).dep()), 1);
    assert_eq!(dependents(&post(41).dep()), 1);
}

static RESULT_RUNS: Runs = Runs::new();

#[cached(timeout = 60)]
async fn fallible(id: i64) -> Result<String, String> {
    RESULT_RUNS.hit();
    if id < 0 {
        return Err("negative".into());
    }
    let p = load(id).await;
    Ok(p.title)
}

#[tokio::test]
async fn async_results_store_only_ok() {
    assert!(fallible(-1).await.is_err());
    assert!(fallible(-1).await.is_err());
    assert_eq!(RESULT_RUNS.get(), 2);
    assert_eq!(fallible(50).await.unwrap(), "post 50");
    assert_eq!(fallible(50).await.unwrap(), "post 50");
    assert_eq!(RESULT_RUNS.get(), 3);
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_futures_are_send_and_can_be_spawned() {
    let handle = tokio::spawn(assert_send(one(60)));
    assert_eq!(handle.await.unwrap(), "post 60");
}
