//! `timeout` expires entries; `forever` does not; expired entries leave the
//! registry. Sleeping past a deadline on the monotonic clock is deterministic.

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::Runs;
use ultracache::{cached, dependents, run_pending_tasks, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "expiry.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

const SHORT: Duration = Duration::from_millis(150);

static SHORT_RUNS: Runs = Runs::new();
static FOREVER_RUNS: Runs = Runs::new();
static SWEPT_RUNS: Runs = Runs::new();

#[cached(timeout = SHORT)]
fn short_lived(id: i64) -> i64 {
    SHORT_RUNS.hit();
    load(id).id
}

#[cached(forever)]
fn long_lived(id: i64) -> i64 {
    FOREVER_RUNS.hit();
    load(id).id
}

#[cached(timeout = Duration::from_millis(150))]
fn swept(id: i64) -> i64 {
    SWEPT_RUNS.hit();
    load(id).id
}

#[test]
fn timeout_expires_and_forever_does_not() {
    short_lived(1);
    short_lived(1);
    long_lived(2);
    assert_eq!((SHORT_RUNS.get(), FOREVER_RUNS.get()), (1, 1));

    sleep(SHORT + Duration::from_millis(50));

    short_lived(1);
    long_lived(2);
    assert_eq!(SHORT_RUNS.get(), 2, "the timed entry expired");
    assert_eq!(FOREVER_RUNS.get(), 1, "the forever entry did not");
}

#[test]
fn expired_entries_leave_the_registry() {
    swept(3);
    assert_eq!(dependents(&Post { id: 3 }.dep()), 1);
    sleep(Duration::from_millis(200));
    // Nobody reads the entry again: maintenance alone must remove it.
    run_pending_tasks();
    assert_eq!(dependents(&Post { id: 3 }.dep()), 0);
    assert_eq!(
        ultracache::stats().cache("swept").map(|c| c.entries),
        Some(0)
    );
}
