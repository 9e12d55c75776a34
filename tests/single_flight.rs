//! Concurrent misses on one key run the body once; the other callers wait
//! for its result (threads block, tasks await).

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Runs;
use ultracache::{cached, stats};

const CALLERS: usize = 8;

/// Waits until `cond` holds, failing the test after a generous deadline.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::yield_now();
    }
}

fn coalesced(name: &str) -> u64 {
    stats().cache(name).map_or(0, |c| c.coalesced)
}

static RUNS: Runs = Runs::new();
static RELEASE: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);

#[cached(forever)]
fn expensive(key: u32) -> u32 {
    RUNS.hit();
    // Hold the computation until the test saw every other caller waiting.
    let release = RELEASE.lock().unwrap().take();
    if let Some(rx) = release {
        rx.recv().unwrap();
    }
    key * 2
}

#[test]
fn threads_missing_one_key_run_the_body_once() {
    let (tx, rx) = mpsc::channel();
    *RELEASE.lock().unwrap() = Some(rx);
    let start = Arc::new(Barrier::new(CALLERS));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                expensive(21)
            })
        })
        .collect();
    wait_until("all other callers wait on the computation", || {
        coalesced("expensive") == (CALLERS - 1) as u64
    });
    tx.send(()).unwrap();
    for c in callers {
        assert_eq!(c.join().unwrap(), 42);
    }
    assert_eq!(RUNS.get(), 1);
    let s = stats();
    let s = s.cache("expensive").unwrap();
    assert_eq!((s.misses, s.hits), (1, (CALLERS - 1) as u64));
}

static ASYNC_RUNS: Runs = Runs::new();
static ASYNC_RELEASE: Mutex<Option<tokio::sync::oneshot::Receiver<()>>> = Mutex::new(None);

#[cached(forever)]
async fn expensive_async(key: u32) -> u32 {
    ASYNC_RUNS.hit();
    let rx = ASYNC_RELEASE.lock().unwrap().take();
    if let Some(rx) = rx {
        rx.await.unwrap();
    }
    key * 3
}

#[test]
fn tasks_missing_one_key_run_the_body_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    *ASYNC_RELEASE.lock().unwrap() = Some(rx);
    // Tasks waiting do not block threads: 8 tasks on 2 workers all wait.
    let tasks: Vec<_> = (0..CALLERS).map(|_| rt.spawn(expensive_async(5))).collect();
    wait_until("all other tasks wait on the computation", || {
        coalesced("expensive_async") == (CALLERS - 1) as u64
    });
    tx.send(()).unwrap();
    for t in tasks {
        assert_eq!(rt.block_on(t).unwrap(), 15);
    }
    assert_eq!(ASYNC_RUNS.get(), 1);
}

static PANICS: Runs = Runs::new();
static PANIC_GATE: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);

#[cached(forever)]
fn panics_first(key: u32) -> u32 {
    PANICS.hit();
    let gate = PANIC_GATE.lock().unwrap().take();
    if let Some(rx) = gate {
        rx.recv().unwrap();
        panic!("the first computation fails");
    }
    key + 1
}

#[test]
fn a_panicking_leader_releases_the_waiters_who_compute_again() {
    let (tx, rx) = mpsc::channel();
    *PANIC_GATE.lock().unwrap() = Some(rx);
    let leader = thread::spawn(|| panics_first(1));
    wait_until("the leader runs", || PANICS.get() == 1);
    let waiter = thread::spawn(|| panics_first(1));
    wait_until("the second caller waits", || coalesced("panics_first") == 1);
    tx.send(()).unwrap();
    assert!(leader.join().is_err(), "the leader panicked");
    assert_eq!(waiter.join().unwrap(), 2, "the waiter computed instead");
    assert_eq!(PANICS.get(), 2);
    assert_eq!(panics_first(1), 2);
    assert_eq!(PANICS.get(), 2, "and its value was stored");
}

static RECURSE: Runs = Runs::new();

#[cached(forever, skip(depth))]
fn nested_same_key(n: u32, depth: u32) -> u32 {
    RECURSE.hit();
    if depth == 0 {
        n
    } else {
        // Asks for its own key while computing it: waiting for itself would
        // never end, so the inner call computes without the cache.
        nested_same_key(n, depth - 1) + 1
    }
}

#[test]
fn a_computation_asking_for_its_own_key_does_not_deadlock() {
    assert_eq!(nested_same_key(3, 2), 5);
    assert_eq!(RECURSE.get(), 3);
    assert_eq!(nested_same_key(3, 0), 5, "the outer value was stored");
    assert_eq!(RECURSE.get(), 3);
}
