//! A store's room: an entry that ends (invalidated, replaced, cleared) frees
//! its place in the bound at once, its memory returns, the eviction policy
//! keeps what is read often, and the count stays exact under concurrent
//! writers. Each test has its own store of one shard (100 entries), so the
//! bound is exact.

use std::sync::{Arc, Barrier, Once, Weak};
use std::thread;

use ultracache::{
    clear_store, invalidate, run_pending_tasks, track, Cache, Config, StoreConfig, Trackable,
};

#[derive(Trackable)]
#[trackable(kind = "store_room.row")]
struct Row {
    id: u64,
}

const ROOM: u64 = 100;

fn setup() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let room = || StoreConfig::new().max_entries(ROOM).no_default_timeout();
        Config::new()
            .store("freed", room())
            .store("memory", room())
            .store("policy", room())
            .store("churn", room())
            .store("views", room())
            .install()
            .expect("first install succeeds");
    });
}

/// Computes `key` in `cache`, depending on row `row` (each test has rows of
/// its own); true when it computed.
fn compute(cache: &Cache<u64, Arc<String>>, key: u64, row: u64) -> bool {
    let mut computed = false;
    cache.get_or_compute(key, || {
        computed = true;
        track(&Row { id: row });
        Arc::new(format!("{key}"))
    });
    computed
}

static FREED: Cache<u64, Arc<String>> = Cache::new("store_room.freed").store("freed");

#[test]
fn invalidated_entries_free_their_room_at_once() {
    setup();
    for k in 0..ROOM {
        assert!(compute(&FREED, k, k));
    }
    for row in 0..ROOM / 2 {
        assert_eq!(invalidate(&Row { id: row }), 1, "{:?}", FREED.stats());
    }
    // Half the room is free: 50 new entries evict nothing.
    for k in ROOM..ROOM + ROOM / 2 {
        assert!(compute(&FREED, k, k));
    }
    assert_eq!(FREED.stats().evictions, 0);
    for k in ROOM / 2..ROOM + ROOM / 2 {
        assert!(!compute(&FREED, k, k), "{k} was evicted");
    }
    // Replacing an entry does not count it twice either.
    FREED.invalidate(&(ROOM / 2));
    assert!(compute(&FREED, ROOM / 2, ROOM / 2));
    assert_eq!(FREED.stats().evictions, 0);
    // Full now: one more evicts exactly one.
    assert!(compute(&FREED, 10_000, 50_000));
    assert_eq!(FREED.stats().evictions, 1);
    assert_eq!(FREED.stats().entries, ROOM);
}

/// The front map frees what it let go of in batches (epoch reclamation):
/// at most this many values of a thread wait for their batch.
const RECLAIM_BATCH: usize = 64;

fn held(weak: &[Weak<String>]) -> usize {
    weak.iter().filter(|w| w.upgrade().is_some()).count()
}

static MEMORY: Cache<u64, Arc<String>> = Cache::new("store_room.memory").store("memory");

#[test]
fn an_invalidated_value_is_dropped_by_maintenance_or_the_next_inserts() {
    setup();
    let mut weak: Vec<Weak<String>> = Vec::new();
    for k in 0..ROOM {
        compute(&MEMORY, k, 100_000 + k);
        weak.push(Arc::downgrade(&MEMORY.get(&k).expect("stored")));
    }
    for k in 0..ROOM {
        invalidate(&Row { id: 100_000 + k });
    }
    run_pending_tasks();
    assert!(
        held(&weak) <= RECLAIM_BATCH,
        "{} values held after maintenance",
        held(&weak)
    );

    // Without maintenance: the store's own inserts sweep its tombstones.
    let mut weak: Vec<Weak<String>> = Vec::new();
    for k in 0..ROOM {
        compute(&MEMORY, k, 102_000 + k);
        let stored = MEMORY.get(&k);
        assert!(stored.is_some(), "{k}: {:?}", MEMORY.stats());
        weak.push(Arc::downgrade(&stored.unwrap()));
    }
    for k in 0..ROOM {
        invalidate(&Row { id: 102_000 + k });
    }
    compute(&MEMORY, 5_000, 105_000);
    assert!(
        held(&weak) <= RECLAIM_BATCH,
        "{} values held after an insert",
        held(&weak)
    );
}

static POLICY: Cache<u64, Arc<String>> = Cache::new("store_room.policy").store("policy");

#[test]
fn entries_read_often_survive_a_scan_of_entries_read_once() {
    setup();
    const HOT: u64 = 40;
    for k in 0..HOT {
        compute(&POLICY, k, 200_000);
    }
    // 2,000 keys read once, the hot ones read again every 10 of them.
    for k in HOT..HOT + 2_000 {
        compute(&POLICY, k, 200_000);
        if k % 10 == 0 {
            for hot in 0..HOT {
                assert!(
                    POLICY.get(&hot).is_some(),
                    "hot key {hot} evicted at {k}: {:?}",
                    POLICY.stats()
                );
            }
        }
    }
    let s = POLICY.stats();
    assert!(s.evictions >= 2_000 - (ROOM - HOT), "{s:?}");
    assert!(POLICY.stats().entries <= ROOM);
}

static CHURN: Cache<u64, Arc<String>> = Cache::new("store_room.churn").store("churn");

#[test]
fn concurrent_computes_and_invalidations_leave_the_count_exact() {
    setup();
    const THREADS: u64 = 4;
    let start = Arc::new(Barrier::new(THREADS as usize * 2));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let go = Arc::clone(&start);
        handles.push(thread::spawn(move || {
            go.wait();
            for i in 0..5_000u64 {
                let key = (t * 7 + i) % 300;
                compute(&CHURN, key, 300_000 + key % 37);
                if i % 3 == 0 {
                    CHURN.invalidate(&((key + 1) % 300));
                }
            }
        }));
        let go = Arc::clone(&start);
        handles.push(thread::spawn(move || {
            go.wait();
            for i in 0..2_000u64 {
                invalidate(&Row {
                    id: 300_000 + (i + t) % 37,
                });
            }
        }));
    }
    for h in handles {
        h.join().expect("no thread panics");
    }
    assert!(CHURN.stats().entries <= ROOM);
    // The count of entries is what a listing shows, before and after
    // maintenance.
    assert_eq!(CHURN.stats().entries, CHURN.entries().len() as u64);
    run_pending_tasks();
    assert_eq!(CHURN.stats().entries, CHURN.entries().len() as u64);
    // Whatever ran, the store counts exactly what it holds: cleared, it
    // takes `ROOM` new entries without evicting, and evicts at the next.
    assert!(clear_store("churn"));
    assert_eq!(CHURN.stats().entries, 0);
    let before = CHURN.stats().evictions;
    for k in 1_000..1_000 + ROOM {
        assert!(compute(&CHURN, k, 300_000 + k));
    }
    assert_eq!(CHURN.stats().evictions, before);
    compute(&CHURN, 5_000, 305_000);
    assert_eq!(CHURN.stats().evictions, before + 1);
}

static VIEWS: Cache<u64, Arc<String>> = Cache::new("store_room.views").store("views");

#[test]
fn an_invalidated_entry_is_gone_from_every_view_at_once() {
    setup();
    for k in 0..50 {
        compute(&VIEWS, k, 400_000);
    }
    assert_eq!(VIEWS.stats().entries, 50);
    assert_eq!(invalidate(&Row { id: 400_000 }), 50);
    // No maintenance ran: counts, listing, reads and the registry agree.
    assert_eq!(VIEWS.stats().entries, 0);
    assert_eq!(VIEWS.stats().bytes, 0);
    assert!(VIEWS.entries().is_empty());
    assert_eq!(ultracache::dependents(&Row { id: 400_000 }.dep()), 0);
    for k in 0..50 {
        assert_eq!(VIEWS.get(&k), None);
    }
    // Computed again, each is counted once.
    for k in 0..50 {
        assert!(compute(&VIEWS, k, 400_001));
    }
    assert_eq!(VIEWS.stats().entries, 50);
    assert_eq!(invalidate(&Row { id: 400_001 }), 50);
    for k in 0..25 {
        assert!(compute(&VIEWS, k, 400_002));
    }
    assert_eq!(VIEWS.stats().entries, 25);
    // A clear takes the rest out, whatever lingered.
    VIEWS.invalidate_all();
    assert_eq!(VIEWS.stats().entries, 0);
    assert!(VIEWS.entries().is_empty());
    for k in 0..50 {
        assert!(compute(&VIEWS, k, 400_003));
    }
    assert_eq!(VIEWS.stats().entries, 50);
    assert!(clear_store("views"));
    assert_eq!(VIEWS.stats().entries, 0);
}
