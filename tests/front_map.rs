//! A cache's front map (its entries by key, read without a lock) under keys
//! that all hash alike, and under readers racing writers, invalidations and
//! clears: every read returns its own key's value or nothing, and what the
//! listings and counts say agrees with what reads find.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Once};
use std::thread;

use ultracache::{invalidate, run_pending_tasks, track, Cache, Config, StoreConfig, Trackable};

#[derive(Trackable)]
#[trackable(kind = "front_map.row")]
struct Row {
    id: u64,
}

fn setup() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        Config::new()
            .store(
                "front",
                StoreConfig::new()
                    .max_entries(1_000_000)
                    .no_default_timeout(),
            )
            .install()
            .expect("first install succeeds");
    });
}

/// A key whose hash is the same whatever its value: every key of a cache
/// lands in one probe chain.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Clash(u64);

impl Hash for Clash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(7);
    }
}

static CLASHING: Cache<Clash, u64> = Cache::new("front_map.clashing").store("front");

#[test]
fn keys_whose_hashes_all_collide_are_each_found_replaced_and_removed() {
    setup();
    const KEYS: u64 = 3_000;
    for k in 0..KEYS {
        assert_eq!(CLASHING.get_or_compute(Clash(k), || k * 10), k * 10);
    }
    for k in 0..KEYS {
        assert_eq!(CLASHING.get(&Clash(k)), Some(k * 10), "key {k}");
    }
    assert_eq!(CLASHING.get(&Clash(KEYS)), None);
    // Every odd key out: the chain keeps its even keys past the holes.
    for k in (1..KEYS).step_by(2) {
        CLASHING.invalidate(&Clash(k));
    }
    for k in 0..KEYS {
        let want = (k % 2 == 0).then_some(k * 10);
        assert_eq!(CLASHING.get(&Clash(k)), want, "key {k}");
    }
    assert_eq!(CLASHING.stats().entries, KEYS / 2);
    // Back with new values, in the holes or past them.
    for k in (1..KEYS).step_by(2) {
        assert_eq!(CLASHING.get_or_compute(Clash(k), || k * 10 + 1), k * 10 + 1);
    }
    for k in 0..KEYS {
        let want = if k % 2 == 0 { k * 10 } else { k * 10 + 1 };
        assert_eq!(CLASHING.get(&Clash(k)), Some(want), "key {k}");
    }
    assert_eq!(CLASHING.entries().len() as u64, KEYS);
    CLASHING.invalidate_all();
    run_pending_tasks();
    for k in 0..KEYS {
        assert_eq!(CLASHING.get(&Clash(k)), None, "key {k} after the clear");
    }
    assert_eq!(CLASHING.stats().entries, 0);
    assert_eq!(CLASHING.get_or_compute(Clash(5), || 55), 55);
    assert_eq!(CLASHING.get(&Clash(5)), Some(55));
}

static RACED: Cache<String, Arc<(String, u64)>> = Cache::new("front_map.raced").store("front");

const ROWS: u64 = 40;
const KEYS: u64 = 400;

fn key(i: u64) -> String {
    format!("key-{i}")
}

/// The value of key `i`, depending on row `i % ROWS`: its key, and the
/// row's version when it was computed.
fn compute(i: u64, versions: &[AtomicU64]) -> Arc<(String, u64)> {
    RACED.get_or_compute(key(i), || {
        track(&Row { id: i % ROWS });
        Arc::new((key(i), versions[(i % ROWS) as usize].load(SeqCst)))
    })
}

#[test]
fn readers_racing_writers_and_clears_get_their_own_keys_value_or_nothing() {
    setup();
    let versions: Arc<Vec<AtomicU64>> = Arc::new((0..ROWS).map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(Barrier::new(4));
    let done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..2u64 {
        let (versions, start) = (Arc::clone(&versions), Arc::clone(&start));
        threads.push(thread::spawn(move || {
            start.wait();
            for r in 0..20_000u64 {
                let i = (r * 13 + t * 7) % KEYS;
                let value = compute(i, &versions);
                assert_eq!(value.0, key(i), "another key's value");
            }
        }));
    }
    {
        // Borrowed reads (`&str` for `String` keys), racing everything.
        let (start, done) = (Arc::clone(&start), Arc::clone(&done));
        threads.push(thread::spawn(move || {
            start.wait();
            let mut i = 0;
            while !done.load(SeqCst) {
                i = (i + 1) % (KEYS + 10);
                if let Some(value) = RACED.get(key(i).as_str()) {
                    assert_eq!(value.0, key(i), "another key's value");
                }
            }
        }));
    }
    {
        let (versions, start) = (Arc::clone(&versions), Arc::clone(&start));
        threads.push(thread::spawn(move || {
            start.wait();
            for r in 0..3_000u64 {
                let row = r % ROWS;
                versions[row as usize].fetch_add(1, SeqCst);
                invalidate(&Row { id: row });
                RACED.invalidate(&key((r * 31) % KEYS));
                if r % 500 == 499 {
                    RACED.invalidate_all();
                }
            }
        }));
    }
    let readers = threads.split_off(2);
    let (borrowed, writer) = {
        let mut it = readers.into_iter();
        (it.next().expect("reader"), it.next().expect("writer"))
    };
    writer.join().expect("the writer");
    for computer in threads {
        computer.join().expect("a computing reader");
    }
    done.store(true, SeqCst);
    borrowed.join().expect("the borrowed reader");

    // Quiet now: every value read is its key's and as new as its row.
    run_pending_tasks();
    for i in 0..KEYS {
        let value = compute(i, &versions);
        assert_eq!(value.0, key(i));
        assert_eq!(
            value.1,
            versions[(i % ROWS) as usize].load(SeqCst),
            "key {i} is stale"
        );
    }
    let listed = RACED.entries();
    assert_eq!(listed.len() as u64, KEYS);
    assert_eq!(RACED.stats().entries, KEYS);
    for entry in listed {
        assert_eq!(entry.value.0, entry.key);
    }
}
