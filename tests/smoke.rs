use std::sync::atomic::{AtomicUsize, Ordering};
use ultracache::{cached, invalidate, invalidates, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "smoke.post")]
struct Post {
    id: i64,
    title: String,
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[tracks]
fn load(id: i64) -> Post {
    Post { id, title: format!("t{id}") }
}

#[cached(timeout = 60)]
fn page(id: i64) -> String {
    RUNS.fetch_add(1, Ordering::SeqCst);
    load(id).title
}

#[invalidates(Post)]
fn save(p: Post) -> Result<Post, String> {
    Ok(p)
}

#[test]
fn smoke() {
    assert_eq!(page(1), "t1");
    assert_eq!(page(1), "t1");
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    save(load(1)).unwrap();
    assert_eq!(page(1), "t1");
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(invalidate(&load(1)), 1);
}
