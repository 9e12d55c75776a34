//! Values kept past their timeout for `stale_if_error` stay inside the
//! memory bound: in a store bounded in bytes, the kept values of all its
//! caches weigh at most a quarter of the bound (each cache's an equal
//! part) and count within it, a value heavier than its cache's part is not
//! kept, and what is kept is still served when computing fails.

use std::thread::sleep;
use std::time::Duration;

use ultracache::{run_pending_tasks, Cache, Config, StoreConfig};

const BOUND: u64 = 256 << 10;
const TIMEOUT: Duration = Duration::from_millis(100);
const PAST: Duration = Duration::from_millis(160);
const VALUE: usize = 8 << 10;

static PAGES: Cache<u32, String> = Cache::new("kept-pages")
    .store("kept")
    .timeout(TIMEOUT)
    .stale_if_error(Duration::from_secs(3600))
    .weigher(String::len);

/// A second cache keeping values in the same store.
static NOTES: Cache<u32, String> = Cache::new("kept-notes")
    .store("kept")
    .timeout(TIMEOUT)
    .stale_if_error(Duration::from_secs(3600))
    .weigher(String::len);

fn page(id: u32, len: usize) -> String {
    format!("{id:>8}").repeat(len / 8)
}

#[test]
fn kept_values_weigh_at_most_a_quarter_of_the_store_bound_and_are_still_served() {
    Config::new()
        .store("kept", StoreConfig::new().max_bytes(BOUND))
        .install()
        .expect("configured once");
    let ok = |id: u32, len: usize| PAGES.try_get_or_compute(id, || Ok::<_, ()>(page(id, len)));
    let down = |id: u32| PAGES.try_get_or_compute(id, || Err::<String, ()>(()));

    // 20 values of 8 KiB (160 KiB, inside the 256 KiB bound), all expired.
    for id in 0..20 {
        assert_eq!(ok(id, VALUE), Ok(page(id, VALUE)));
    }
    sleep(PAST);
    run_pending_tasks();
    let stats = PAGES.stats();
    assert!(stats.kept > 0, "nothing kept");
    assert!(
        stats.kept_bytes <= BOUND / 4,
        "kept values weigh {} bytes, past a quarter of the {BOUND}-byte bound",
        stats.kept_bytes
    );
    assert!(stats.kept < 20, "all 20 kept: the budget bounds nothing");
    // Each kept value is served when computing fails; the others fail.
    let served = (0..20).filter(|&id| down(id).is_ok()).count();
    assert_eq!(served as u64, stats.kept, "kept values not served");
    for id in 0..20 {
        if let Ok(v) = down(id) {
            assert_eq!(v, page(id, VALUE), "another key's value");
        }
    }

    // A value heavier than the budget is never kept.
    let heavy = (BOUND / 4) as usize + 1024;
    assert_eq!(ok(100, heavy), Ok(page(100, heavy)));
    sleep(PAST);
    run_pending_tasks();
    assert_eq!(down(100), Err(()), "a value past the budget was kept");
    assert!(PAGES.stats().kept_bytes <= BOUND / 4);

    // A second cache in the store: the two share the quarter, and each
    // keeps values of its own.
    let note = |id: u32| NOTES.try_get_or_compute(id, || Ok::<_, ()>(page(id, VALUE)));
    let note_down = |id: u32| NOTES.try_get_or_compute(id, || Err::<String, ()>(()));
    for id in 0..20 {
        assert_eq!(note(id), Ok(page(id, VALUE)));
    }
    for id in 200..220 {
        assert_eq!(ok(id, VALUE), Ok(page(id, VALUE)));
    }
    sleep(PAST);
    run_pending_tasks();
    let (pages, notes) = (PAGES.stats(), NOTES.stats());
    assert!(
        pages.kept_bytes + notes.kept_bytes <= BOUND / 4,
        "two caches keep {} + {} bytes, past a quarter of the {BOUND}-byte bound",
        pages.kept_bytes,
        notes.kept_bytes
    );
    assert!(pages.kept > 0 && notes.kept > 0, "a cache kept nothing");
    let served = (0..20).filter(|&id| note_down(id).is_ok()).count();
    assert_eq!(served as u64, notes.kept, "kept notes not served");

    // Kept values count within the bound: new entries filling the store
    // evict for the room they hold.
    let kept_before = pages.kept_bytes + notes.kept_bytes;
    assert!(kept_before > 0);
    // (Small ones, so that every shard fills to within one of its bound.)
    for id in 1_000..1_400 {
        let small = NOTES.try_get_or_compute(id, || Ok::<_, ()>(page(id, 1024)));
        assert_eq!(small, Ok(page(id, 1024)));
    }
    let (pages, notes) = (PAGES.stats(), NOTES.stats());
    let live = pages.bytes + notes.bytes;
    let kept = pages.kept_bytes + notes.kept_bytes;
    assert!(kept > 0, "the kept values were dropped for room");
    assert!(
        live + kept <= BOUND,
        "{live} bytes of entries and {kept} bytes kept, past the {BOUND}-byte bound"
    );
}
