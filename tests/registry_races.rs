//! An entry that an invalidation takes while its dependency links are still
//! being made leaves no link behind. (Such a link outlived its entry and
//! held it — value and all — until that dependency was written again: under
//! steady writes, memory crept up by every computation that lost the race.)
//! Once every entry is gone, no dependency has a dependent left.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ultracache::{dependents, invalidate, run_pending_tasks, track, Cache, Trackable};

#[derive(Trackable)]
#[trackable(kind = "races.row")]
struct Row {
    id: u64,
}

/// Each value reads every row: many links per entry, so an invalidation of
/// the first row often lands while the last ones are being linked.
static PAGES: Cache<u64, String> = Cache::new("races-pages").forever();

const ROWS: u64 = 200;
const KEYS: u64 = 8;

static COMPUTED: AtomicU64 = AtomicU64::new(0);

fn page(k: u64) -> String {
    PAGES.get_or_compute(k, || {
        COMPUTED.fetch_add(1, Relaxed);
        for id in 0..ROWS {
            track(&Row { id });
        }
        format!("page {k}")
    })
}

#[test]
fn an_entry_invalidated_while_it_is_linked_leaves_no_link_behind() {
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut k = t;
                while !stop.load(Relaxed) {
                    k = (k + 1) % KEYS;
                    assert_eq!(page(k), format!("page {k}"));
                }
            })
        })
        .collect();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                // The first row mostly (linked first), now and then another.
                n += 1;
                let id = if n.is_multiple_of(7) { n % ROWS } else { 0 };
                invalidate(&Row { id });
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while COMPUTED.load(Relaxed) < 20_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Relaxed);
    writer.join().expect("the writer did not panic");
    for r in readers {
        r.join().expect("no reader panicked");
    }
    assert!(COMPUTED.load(Relaxed) >= 1_000, "the readers computed");

    PAGES.invalidate_all();
    run_pending_tasks();
    let left: Vec<(u64, usize)> = (0..ROWS)
        .map(|id| (id, dependents(&Row { id }.dep())))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(PAGES.stats().entries, 0);
    assert!(
        left.is_empty(),
        "rows still linked to entries that are gone (row, links): {left:?}"
    );
}
