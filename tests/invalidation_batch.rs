//! An invalidation ends its entries cache by cache, in batches: every entry
//! of every cache goes, each exactly once, its links under its other
//! dependencies go with it, and a panicking `on_invalidated` hook neither
//! stops the rest nor leaves anything served.
//!
//! The tests read the registry's global link counts, so they run one at a
//! time (`SERIAL`) and use kinds of their own.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use ultracache::{
    dependents, invalidate_any_of, invalidate_deps, stats, track_dep, Cache, Dep, Kind,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn links() -> usize {
    stats().dependency_links
}

fn entries(cache: &str) -> u64 {
    stats().cache(cache).map_or(0, |c| c.entries)
}

fn invalidations(cache: &str) -> u64 {
    stats().cache(cache).map_or(0, |c| c.invalidations)
}

// ---- entries of several caches, interleaved, with other dependencies ----

const MIXED: Kind = Kind::new("batch.mixed");
static MIXED_A: Cache<u64, u64> = Cache::new("batch.mixed-a").forever();
static MIXED_B: Cache<u64, String> = Cache::new("batch.mixed-b").forever();

#[test]
fn every_entry_of_every_cache_goes_with_its_other_links() {
    let _serial = serial();
    let before = links();
    let shared = Dep::object(MIXED, &0u64);
    // Stored alternately, so that the shared dependency's entries are
    // spread over both caches; each also depends on an object of its own.
    for k in 1..=500u64 {
        MIXED_A.get_or_compute(k, || {
            track_dep(shared);
            track_dep(Dep::object(MIXED, &(k * 2)));
            k
        });
        MIXED_B.get_or_compute(k, || {
            track_dep(shared);
            track_dep(Dep::object(MIXED, &(k * 2 + 1)));
            k.to_string()
        });
    }
    assert_eq!(dependents(&shared), 1000);
    assert_eq!(links(), before + 2000);
    let (a0, b0) = (
        invalidations("batch.mixed-a"),
        invalidations("batch.mixed-b"),
    );

    assert_eq!(invalidate_deps(&[shared]), 1000);

    for k in 1..=500u64 {
        assert_eq!(MIXED_A.get(&k), None, "a.{k} survived");
        assert_eq!(MIXED_B.get(&k), None, "b.{k} survived");
        assert_eq!(dependents(&Dep::object(MIXED, &(k * 2))), 0);
        assert_eq!(dependents(&Dep::object(MIXED, &(k * 2 + 1))), 0);
    }
    assert_eq!(links(), before, "links under the other dependencies stayed");
    assert_eq!(entries("batch.mixed-a"), 0);
    assert_eq!(entries("batch.mixed-b"), 0);
    assert_eq!(invalidations("batch.mixed-a") - a0, 500);
    assert_eq!(invalidations("batch.mixed-b") - b0, 500);
    // Nothing is left to drop under the other dependencies.
    assert_eq!(invalidate_deps(&[Dep::object(MIXED, &2u64)]), 0);
}

#[test]
fn a_kind_invalidation_leaves_no_link_under_other_kinds() {
    const LISTED: Kind = Kind::new("batch.listed");
    const OTHER: Kind = Kind::new("batch.listed-other");
    static LISTS: Cache<u64, u64> = Cache::new("batch.lists").forever();
    let _serial = serial();
    let before = links();
    for k in 0..300u64 {
        LISTS.get_or_compute(k, || {
            track_dep(Dep::kind(LISTED));
            track_dep(Dep::object(LISTED, &k));
            track_dep(Dep::object(OTHER, &k));
            k
        });
    }
    assert_eq!(links(), before + 900);
    invalidate_any_of(LISTED);
    for k in 0..300u64 {
        assert_eq!(LISTS.get(&k), None);
        assert_eq!(dependents(&Dep::object(OTHER, &k)), 0);
    }
    assert_eq!(links(), before);
    assert_eq!(entries("batch.lists"), 0);
}

// ---- a panicking hook ----------------------------------------------------

const HOOKED: Kind = Kind::new("batch.hooked");
static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);
static HOOKED_PAGES: Cache<u64, u64> =
    Cache::new("batch.hooked-pages")
        .forever()
        .on_invalidated(|k, _| {
            HOOK_CALLS.fetch_add(1, SeqCst);
            if *k % 7 == 3 {
                panic!("hook fails on {k}");
            }
        });
static PLAIN_PAGES: Cache<u64, u64> = Cache::new("batch.plain-pages").forever();

#[test]
fn a_panicking_hook_stops_nothing_and_its_panic_reaches_the_writer() {
    let _serial = serial();
    let before = links();
    let first = Dep::object(HOOKED, &1u64);
    let second = Dep::object(HOOKED, &2u64);
    for k in 0..100u64 {
        HOOKED_PAGES.get_or_compute(k, || {
            track_dep(if k < 50 { first } else { second });
            k
        });
        PLAIN_PAGES.get_or_compute(k, || {
            track_dep(if k < 50 { first } else { second });
            k
        });
    }
    let calls = HOOK_CALLS.load(SeqCst);

    let result = catch_unwind(AssertUnwindSafe(|| invalidate_deps(&[first, second])));
    let panic = result.expect_err("the hook's panic reaches the writer");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(message.starts_with("hook fails on"), "{message}");

    // Every entry of both dependencies and both caches is gone — also
    // those after the first panic, and those of the second dependency.
    for k in 0..100u64 {
        assert_eq!(HOOKED_PAGES.get(&k), None, "hooked {k} is still served");
        assert_eq!(PLAIN_PAGES.get(&k), None, "plain {k} is still served");
    }
    assert_eq!(HOOK_CALLS.load(SeqCst) - calls, 100, "every hook ran once");
    assert_eq!(entries("batch.hooked-pages"), 0);
    assert_eq!(entries("batch.plain-pages"), 0);
    assert_eq!(links(), before);

    // And the cache works on: a new value is stored and served.
    assert_eq!(HOOKED_PAGES.get_or_compute(3, || 33), 33);
    assert_eq!(HOOKED_PAGES.get(&3), Some(33));
}

// ---- two writers, entries under both of their objects ---------------------

const RACED: Kind = Kind::new("batch.raced");
static RACED_PAGES: Cache<u64, u64> = Cache::new("batch.raced-pages").forever();

#[test]
fn two_writers_of_one_entrys_objects_end_it_once() {
    let _serial = serial();
    let before = links();
    for round in 0..20u64 {
        let left = Dep::object(RACED, &(round * 2));
        let right = Dep::object(RACED, &(round * 2 + 1));
        for k in 0..200u64 {
            RACED_PAGES.get_or_compute(k, || {
                track_dep(left);
                track_dep(right);
                k + round
            });
        }
        let counted = invalidations("batch.raced-pages");
        let start = Arc::new(Barrier::new(2));
        let writers: Vec<_> = [left, right]
            .into_iter()
            .map(|dep| {
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    invalidate_deps(&[dep])
                })
            })
            .collect();
        for w in writers {
            w.join().expect("a writer panicked");
        }
        for k in 0..200u64 {
            assert_eq!(RACED_PAGES.get(&k), None, "round {round}: {k} survived");
        }
        assert_eq!(
            invalidations("batch.raced-pages") - counted,
            200,
            "round {round}: each entry ended once"
        );
        assert_eq!(links(), before, "round {round}: links left behind");
    }
}

// ---- readers recompute while a writer drops ------------------------------

const CHURN: Kind = Kind::new("batch.churn");
static CHURN_PAGES: Cache<u64, u64> = Cache::new("batch.churn-pages").forever();
static VERSION: AtomicUsize = AtomicUsize::new(0);
/// The newest version whose invalidation has returned.
static INVALIDATED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn a_reader_never_gets_a_value_from_before_a_returned_invalidation() {
    let _serial = serial();
    let dep = Dep::object(CHURN, &1u64);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (done, checks, start) =
                (Arc::clone(&done), Arc::clone(&checks), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                while !done.load(SeqCst) {
                    for k in 0..64u64 {
                        // A value older than this was invalidated before
                        // the read began.
                        let floor = INVALIDATED.load(SeqCst) as u64;
                        let seen = CHURN_PAGES.get_or_compute(k, || {
                            let v = VERSION.load(SeqCst) as u64;
                            track_dep(dep);
                            v
                        });
                        assert!(seen >= floor, "key {k}: value {seen} older than {floor}");
                        checks.fetch_add(1, SeqCst);
                    }
                }
            })
        })
        .collect();
    start.wait();
    // Write, then invalidate: a read that starts after the invalidation
    // returns must see the new version. At least 2,000 writes, and on until
    // the readers checked 100,000 reads (bounded: a stalled reader fails).
    let mut writes = 0;
    while writes < 2_000 || checks.load(SeqCst) < 100_000 {
        let v = VERSION.fetch_add(1, SeqCst) + 1;
        invalidate_deps(&[dep]);
        INVALIDATED.store(v, SeqCst);
        writes += 1;
        if writes > 10_000_000 {
            break;
        }
    }
    done.store(true, SeqCst);
    for r in readers {
        r.join()
            .expect("a reader saw a value older than a returned invalidation");
    }
    assert!(checks.load(SeqCst) >= 100_000, "the readers stalled");
}

// ---- a panicking hook during a clear ---------------------------------------

static CLEAR_CALLS: AtomicUsize = AtomicUsize::new(0);
static CLEARED_HOOKED: Cache<u64, u64> = Cache::new("batch.cleared-hooked")
    .forever()
    .on_invalidated(|k, _| {
        CLEAR_CALLS.fetch_add(1, SeqCst);
        if *k % 5 == 1 {
            panic!("clear hook fails on {k}");
        }
    });
static CLEARED_PLAIN: Cache<u64, u64> = Cache::new("batch.cleared-plain").forever();

#[test]
fn a_panicking_hook_during_a_clear_leaves_nothing_served() {
    let _serial = serial();
    for k in 0..50u64 {
        CLEARED_HOOKED.get_or_compute(k, || k);
        CLEARED_PLAIN.get_or_compute(k, || k);
    }
    let calls = CLEAR_CALLS.load(SeqCst);
    let result = catch_unwind(AssertUnwindSafe(ultracache::clear));
    assert!(result.is_err(), "the hook's panic reaches the caller");
    for k in 0..50u64 {
        assert_eq!(CLEARED_HOOKED.get(&k), None, "hooked {k} is still served");
        assert_eq!(CLEARED_PLAIN.get(&k), None, "plain {k} is still served");
    }
    assert_eq!(CLEAR_CALLS.load(SeqCst) - calls, 50, "every hook ran once");
    assert_eq!(entries("batch.cleared-hooked"), 0);
    assert_eq!(entries("batch.cleared-plain"), 0);
    // The caches work on.
    assert_eq!(CLEARED_PLAIN.get_or_compute(1, || 11), 11);
    assert_eq!(CLEARED_PLAIN.get(&1), Some(11));
}
