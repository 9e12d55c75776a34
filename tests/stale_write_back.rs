//! A computation overtaken by an invalidation of something it read is not
//! stored: after `invalidate` returns, no read returns a value computed from
//! the old data. Ordered with barriers, never sleeps.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{Runs, Table};
use ultracache::{cached, invalidates, stats, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "stale.post")]
struct Post {
    id: i64,
    title: String,
}

static POSTS: Table = Table::new();

#[tracks]
fn load(id: i64) -> Post {
    Post {
        id,
        title: POSTS.get(id).unwrap_or_default(),
    }
}

#[invalidates(Post)]
fn save(post: Post) -> Post {
    POSTS.set(post.id, &post.title);
    post
}

/// Two meeting points: "the computation has read", "the write is done".
struct Gate {
    read: Barrier,
    written: Barrier,
}

static RUNS: Runs = Runs::new();

#[cached(forever, skip(gate))]
fn title(id: i64, gate: Option<&Gate>) -> String {
    RUNS.hit();
    let t = load(id).title;
    if let Some(gate) = gate {
        gate.read.wait();
        gate.written.wait();
    }
    t
}

#[test]
fn a_value_read_before_a_write_that_finishes_after_it_is_not_stored() {
    POSTS.set(1, "old");
    let gate = Arc::new(Gate {
        read: Barrier::new(2),
        written: Barrier::new(2),
    });
    let slow = {
        let gate = Arc::clone(&gate);
        thread::spawn(move || title(1, Some(&gate)))
    };
    gate.read.wait(); // the computation has read "old"
    save(Post {
        id: 1,
        title: "new".into(),
    });
    gate.written.wait(); // let it finish after the write
    assert_eq!(
        slow.join().unwrap(),
        "old",
        "the slow caller got what it read"
    );

    // Its value was not stored: the next call computes from the new data.
    assert_eq!(title(1, None), "new");
    assert_eq!(RUNS.get(), 2);
    assert_eq!(title(1, None), "new");
    assert_eq!(RUNS.get(), 2);
    assert_eq!(stats().cache("title").map(|c| c.stale), Some(1));
}

static ASYNC_RUNS: Runs = Runs::new();

#[cached(forever, skip(gate))]
async fn title_async(id: i64, gate: Option<Arc<Gate>>) -> String {
    ASYNC_RUNS.hit();
    let t = load(id).title;
    if let Some(gate) = gate {
        // Block this task's thread: the test is about ordering, not speed.
        gate.read.wait();
        gate.written.wait();
    }
    t
}

#[test]
fn the_same_holds_for_async_computations() {
    POSTS.set(2, "old");
    let gate = Arc::new(Gate {
        read: Barrier::new(2),
        written: Barrier::new(2),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let slow = rt.spawn(title_async(2, Some(Arc::clone(&gate))));
    gate.read.wait();
    save(Post {
        id: 2,
        title: "new".into(),
    });
    gate.written.wait();
    assert_eq!(rt.block_on(slow).unwrap(), "old");
    assert_eq!(rt.block_on(title_async(2, None)), "new");
    assert_eq!(rt.block_on(title_async(2, None)), "new");
    assert_eq!(ASYNC_RUNS.get(), 2);
}
