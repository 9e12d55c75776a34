//! Serve stale on error, never stale on change (`stale_if_error`): a value
//! past its timeout is returned when computing it again fails (an `Err`, a
//! panic), within its grace; never once something it read was written, never
//! past the grace, and a computation that uses it depends on what it read.
//! Sleeping past a deadline on the monotonic clock is deterministic.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::sleep;
use std::time::Duration;

use common::Runs;
use ultracache::{cached, dependents, invalidate, tracks, Cache, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "grace.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

const TIMEOUT: Duration = Duration::from_millis(100);
const PAST: Duration = Duration::from_millis(160);

/// The database is down for the ids in here.
static DOWN: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());
static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn set_down(id: i64, down: bool) {
    let mut d = DOWN.lock().unwrap();
    d.retain(|&x| x != id);
    if down {
        d.push(id);
    }
}

fn is_down(id: i64) -> bool {
    DOWN.lock().unwrap().contains(&id)
}

static RUNS: Runs = Runs::new();

#[cached(timeout = TIMEOUT, stale_if_error = 3600)]
fn title(id: i64) -> Result<String, String> {
    RUNS.hit();
    if is_down(id) {
        return Err("database down".into());
    }
    Ok(format!("post {} v{}", load(id).id, VERSION.load(SeqCst)))
}

fn served_stale(name: &str) -> u64 {
    ultracache::stats()
        .cache(name)
        .map_or(0, |s| s.served_stale)
}

#[test]
fn an_expired_value_is_served_when_computing_it_again_fails() {
    let _clearing = CLEARING.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(title(1), Ok("post 1 v1".into()));
    set_down(1, true);
    // Fresh: a hit, the failure is not even seen.
    assert_eq!(title(1), Ok("post 1 v1".into()));
    sleep(PAST);
    let before = served_stale("title");
    assert_eq!(title(1), Ok("post 1 v1".into()), "the last good value");
    assert_eq!(served_stale("title"), before + 1);
    // Each call tries again (the failure is not cached), and is served stale.
    assert_eq!(title(1), Ok("post 1 v1".into()));
    set_down(1, false);
    assert_eq!(title(1), Ok("post 1 v1".into()), "computed again, and good");
    assert_eq!(title(1), Ok("post 1 v1".into()));
}

#[test]
fn a_value_whose_data_was_written_is_never_served_stale() {
    let _clearing = CLEARING.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(title(2), Ok("post 2 v1".into()));
    sleep(PAST);
    // Written after it expired: the kept copy is known to be wrong.
    invalidate(&load(2));
    set_down(2, true);
    assert_eq!(title(2), Err("database down".into()));

    // Written before it expired (dropped by the write, never kept).
    set_down(2, false);
    assert_eq!(title(2), Ok("post 2 v1".into()));
    invalidate(&load(2));
    set_down(2, true);
    sleep(PAST);
    assert_eq!(title(2), Err("database down".into()));
    set_down(2, false);
}

/// `invalidate_all` clears a whole cache by a tick that kept values of
/// every cache are checked against (conservatively): the tests here, which
/// keep values across failures, run one at a time.
static CLEARING: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_key_invalidated_or_a_cache_cleared_is_never_served_stale() {
    let _clearing = CLEARING.lock().unwrap_or_else(|e| e.into_inner());
    static RATES: Cache<u32, u32> = Cache::new("grace-rates")
        .timeout(TIMEOUT)
        .stale_if_error(Duration::from_secs(3600));
    let fail = || Err::<u32, &str>("down");
    assert_eq!(RATES.try_get_or_compute(1, || Ok::<_, &str>(10)), Ok(10));
    assert_eq!(RATES.try_get_or_compute(2, || Ok::<_, &str>(20)), Ok(20));
    sleep(PAST);
    RATES.invalidate(&1);
    assert_eq!(RATES.try_get_or_compute(1, fail), Err("down"));
    assert_eq!(RATES.try_get_or_compute(2, fail), Ok(20), "key 2 untouched");
    RATES.invalidate_all();
    assert_eq!(RATES.try_get_or_compute(2, fail), Err("down"));
}

#[test]
fn past_its_grace_a_value_is_not_served() {
    let _clearing = CLEARING.lock().unwrap_or_else(|e| e.into_inner());
    static SHORT: Cache<u32, u32> = Cache::new("grace-short")
        .timeout(TIMEOUT)
        .stale_if_error(Duration::from_millis(100));
    assert_eq!(SHORT.try_get_or_compute(1, || Ok::<_, &str>(1)), Ok(1));
    sleep(PAST);
    assert_eq!(SHORT.try_get_or_compute(1, || Err("down")), Ok(1));
    sleep(PAST);
    assert_eq!(SHORT.try_get_or_compute(1, || Err("down")), Err("down"));
}

static PANICS: AtomicBool = AtomicBool::new(false);

#[cached(timeout = TIMEOUT, stale_if_error = 3600)]
fn rendered(id: i64) -> String {
    assert!(!PANICS.load(SeqCst), "the template engine failed");
    format!("<p>{}</p>", load(id).id)
}

#[test]
fn a_panic_while_computing_again_is_answered_with_the_kept_value() {
    let _clearing = CLEARING.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(rendered(3), "<p>3</p>");
    sleep(PAST);
    PANICS.store(true, SeqCst);
    assert_eq!(rendered(3), "<p>3</p>");
    // With nothing kept, the panic goes to the caller.
    let unwound = std::panic::catch_unwind(|| rendered(4));
    assert!(unwound.is_err());
    PANICS.store(false, SeqCst);
    assert_eq!(rendered(4), "<p>4</p>");
}

static OUTER_RUNS: Runs = Runs::new();

#[cached(forever)]
fn summary(id: i64) -> String {
    OUTER_RUNS.hit();
    format!("summary of {}", title(id).unwrap_or_default())
}

#[test]
fn a_value_built_on_a_stale_one_depends_on_what_that_one_read() {
    let _clearing = CLEARING.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(title(5), Ok("post 5 v1".into()));
    sleep(PAST);
    set_down(5, true);
    // The outer computation gets the kept title...
    assert_eq!(summary(5), "summary of post 5 v1");
    assert!(dependents(&load(5).dep()) >= 1);
    // ...and a write of what the title read drops the summary too.
    invalidate(&load(5));
    set_down(5, false);
    VERSION.store(1, SeqCst);
    let runs = OUTER_RUNS.get();
    assert_eq!(summary(5), "summary of post 5 v1");
    assert_eq!(OUTER_RUNS.get(), runs + 1, "the summary was computed again");
}

#[cached(timeout = TIMEOUT, stale_if_error = 3600)]
async fn remote(id: i64) -> Result<String, String> {
    if is_down(id) {
        return Err("remote down".into());
    }
    Ok(format!("remote {}", load(id).id))
}

#[test]
fn async_functions_serve_stale_on_error_too() {
    let _clearing = CLEARING.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(remote(6).await, Ok("remote 6".into()));
        sleep(PAST);
        set_down(6, true);
        assert_eq!(remote(6).await, Ok("remote 6".into()));
        invalidate(&load(6));
        assert_eq!(remote(6).await, Err("remote down".into()));
        set_down(6, false);
    });
}
