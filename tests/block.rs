//! The block API: a `Cache` static for arbitrary code (django-ultracache's
//! `Ultracache` object), with the same recording and invalidation.

mod common;

use std::time::Duration;

use common::Runs;
use ultracache::{cached, invalidate, track, tracks, Cache, Lookup, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "block.user")]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user{id}"),
    }
}

static METRICS: Cache<(&'static str, u64), Vec<u32>> =
    Cache::new("user-metrics").timeout(Duration::from_secs(300));

#[test]
fn look_up_compute_and_store_in_three_steps() {
    let u = user(1);
    let compute = || match METRICS.begin(("user-metrics", u.id)) {
        Lookup::Hit(codes) => (codes, true),
        Lookup::Miss(recording) => {
            track(&u);
            (recording.store(vec![1, 2, 3]), false)
        }
    };
    assert_eq!(compute(), (vec![1, 2, 3], false));
    assert_eq!(compute(), (vec![1, 2, 3], true));
    invalidate(&u);
    assert_eq!(compute(), (vec![1, 2, 3], false), "the user changed");
}

static GREETINGS: Cache<u64, String> = Cache::new("greetings").forever();
static GREET_RUNS: Runs = Runs::new();

#[tracks]
fn load_user(id: u64) -> User {
    user(id)
}

#[test]
fn get_or_compute_records_reads_like_a_cached_function() {
    let greet = |id| {
        GREETINGS.get_or_compute(id, || {
            GREET_RUNS.hit();
            format!("hello {}", load_user(id).name)
        })
    };
    assert_eq!(greet(2), "hello user2");
    assert_eq!(greet(2), "hello user2");
    assert_eq!(GREET_RUNS.get(), 1);
    invalidate(&user(2));
    greet(2);
    assert_eq!(GREET_RUNS.get(), 2);
    GREETINGS.invalidate(&2);
    assert_eq!(GREETINGS.get(&2), None);
}

static FALLIBLE: Cache<u64, String> = Cache::new("fallible");

#[test]
fn try_get_or_compute_stores_only_ok() {
    let r: Result<String, &str> = FALLIBLE.try_get_or_compute(3, || Err("down"));
    assert!(r.is_err());
    assert_eq!(FALLIBLE.get(&3), None);
    let r: Result<String, &str> = FALLIBLE.try_get_or_compute(3, || Ok("up".into()));
    assert_eq!(r.unwrap(), "up");
    assert_eq!(FALLIBLE.get(&3).as_deref(), Some("up"));
}

static SIDEBAR: Cache<u64, String> = Cache::new("sidebar").forever();
static PAGE_RUNS: Runs = Runs::new();

#[cached(forever)]
fn page(id: u64) -> String {
    PAGE_RUNS.hit();
    let sidebar = SIDEBAR.get_or_compute(id, || load_user(id).name);
    format!("<aside>{sidebar}</aside>")
}

#[test]
fn blocks_nest_inside_cached_functions() {
    // The sidebar is warm before the page is computed: a hit inside the page.
    SIDEBAR.get_or_compute(4, || load_user(4).name);
    page(4);
    page(4);
    assert_eq!(PAGE_RUNS.get(), 1);
    invalidate(&user(4));
    page(4);
    assert_eq!(
        PAGE_RUNS.get(),
        2,
        "the page depended on the sidebar's read"
    );
}

static DROPPED: Cache<u64, u64> = Cache::new("dropped");

#[test]
fn a_recording_dropped_without_store_stores_nothing() {
    match DROPPED.begin(5) {
        Lookup::Hit(_) => panic!("empty cache"),
        Lookup::Miss(recording) => drop(recording),
    }
    assert_eq!(DROPPED.get(&5), None);
    assert!(matches!(DROPPED.begin(5), Lookup::Miss(_)));
}

#[tokio::test]
async fn async_blocks() {
    static ASYNC_BLOCK: Cache<u64, String> = Cache::new("async-block");
    let v = ASYNC_BLOCK
        .get_or_compute_async(6, async { load_user(6).name })
        .await;
    assert_eq!(v, "user6");
    assert_eq!(ASYNC_BLOCK.get(&6).as_deref(), Some("user6"));
    invalidate(&user(6));
    assert_eq!(ASYNC_BLOCK.get(&6), None);
}
