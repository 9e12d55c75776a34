//! The promise, tried as a demanding user would: once an invalidation
//! returns, no read returns a value computed from the data it replaced —
//! with hits taken while it runs, computations in flight, nested
//! computations that panic or are cancelled, leaders that fail, wide pages
//! under unrelated writes, and reads on spawned tasks and threads. Each test
//! is named for the race it closes. Ordered with barriers, channels and
//! counters; every wait is bounded.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ultracache::{
    capture, dependents, invalidate_id, stats, track_id, Cache, Dep, Frame, FrameExt, Kind,
    Trackable,
};

/// How long any wait may take before the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(30);

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::yield_now();
    }
}

/// A table of versions by id: the source of truth the caches compute from.
struct Db(Mutex<BTreeMap<u32, u64>>);

impl Db {
    const fn new() -> Self {
        Db(Mutex::new(BTreeMap::new()))
    }
    fn read(&self, id: u32) -> u64 {
        *self.0.lock().unwrap().get(&id).unwrap_or(&0)
    }
    fn write(&self, id: u32) -> u64 {
        let mut rows = self.0.lock().unwrap();
        let v = rows.entry(id).or_insert(0);
        *v += 1;
        *v
    }
}

// ---- 1. an inner hit taken while an invalidation runs ----

#[derive(Trackable)]
#[trackable(kind = "fresh.item")]
struct Item {
    id: u32,
}

static ITEMS: Db = Db::new();
static INNER: Cache<u32, u64> = Cache::new("fresh.inner").forever();
static OUTER: Cache<u32, Vec<u64>> = Cache::new("fresh.outer")
    .forever()
    .on_invalidated(render_during_invalidation);
static DURING: AtomicBool = AtomicBool::new(false);

/// One of 40 fragments, each computed from item 0 (as thousands of entries
/// can depend on one popular object).
fn fragment(k: u32) -> u64 {
    INNER.get_or_compute(k, || {
        let v = ITEMS.read(0);
        track_id::<Item>(0u32);
        v
    })
}

/// The page: the 40 fragments.
fn page() -> Vec<u64> {
    OUTER.get_or_compute(0, || (0..40).map(fragment).collect())
}

/// Runs while the invalidation drops the dependents of item 0 one at a
/// time: the page is rendered again right in that window, when its own
/// entry is dropped, while fragments may not be dropped yet.
fn render_during_invalidation(_: &u32, _: &Vec<u64>) {
    if DURING.swap(false, SeqCst) {
        page();
    }
}

#[test]
fn an_inner_hit_taken_while_an_invalidation_runs_does_not_outlive_it() {
    for round in 1..=20u64 {
        page();
        assert_eq!(ITEMS.write(0), round);
        DURING.store(true, SeqCst);
        invalidate_id::<Item>(0u32);
        assert!(
            page().iter().all(|v| *v == round),
            "round {round}: a stale page outlived the invalidation"
        );
    }
}

#[test]
fn an_inner_hit_taken_while_an_invalidation_runs_does_not_outlive_it_under_load() {
    static PAGES: Cache<u32, u64> = Cache::new("fresh.load.page").forever();
    static PARTS: Cache<u32, u64> = Cache::new("fresh.load.part").forever();
    static DATA: Db = Db::new();
    const KIND: Kind = Kind::new("fresh.load.item");
    let part = |k: u32| {
        PARTS.get_or_compute(k, || {
            let v = DATA.read(0);
            ultracache::track_dep(Dep::object(KIND, &0u32));
            v
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(SeqCst) {
                PAGES.get_or_compute(0, || part(0));
            }
        })
    };
    let mut stale = 0;
    for round in 1..=200u64 {
        // Other entries that depend on the object widen the window.
        for k in 1..200u32 {
            part(k);
        }
        assert_eq!(DATA.write(0), round);
        ultracache::invalidate_deps(&[Dep::object(KIND, &0u32)]);
        if PAGES.get_or_compute(0, || part(0)) != round {
            stale += 1;
        }
    }
    stop.store(true, SeqCst);
    reader.join().unwrap();
    assert_eq!(
        stale, 0,
        "pages served stale after the invalidation returned"
    );
}

// ---- 2. cache, store and key invalidations refuse computations in flight ----

/// A computation that stops in the middle until released.
fn in_flight<V: Clone + Send + Sync + 'static>(
    cache: &'static Cache<u32, V>,
    key: u32,
    value: V,
) -> (thread::JoinHandle<V>, mpsc::Sender<()>) {
    let (started_tx, started) = mpsc::channel();
    let (release, gate) = mpsc::channel::<()>();
    let handle = thread::spawn(move || {
        cache.get_or_compute(key, move || {
            started_tx.send(()).unwrap();
            gate.recv_timeout(BOUND).unwrap();
            value
        })
    });
    started.recv_timeout(BOUND).unwrap();
    (handle, release)
}

#[test]
fn cache_invalidate_refuses_a_computation_of_that_key_in_flight() {
    static C: Cache<u32, &str> = Cache::new("fresh.key-in-flight").forever();
    let (computing, release) = in_flight(&C, 1, "old");
    C.invalidate(&1);
    release.send(()).unwrap();
    assert_eq!(
        computing.join().unwrap(),
        "old",
        "the caller gets what it computed"
    );
    assert_eq!(C.get(&1), None, "but it is not stored");
    // Other keys are not refused.
    let (computing, release) = in_flight(&C, 2, "two");
    C.invalidate(&3);
    release.send(()).unwrap();
    computing.join().unwrap();
    assert_eq!(C.get(&2), Some("two"));
}

#[test]
fn cache_invalidate_all_refuses_computations_in_flight() {
    static C: Cache<u32, &str> = Cache::new("fresh.all-in-flight").forever();
    let (computing, release) = in_flight(&C, 1, "old");
    C.invalidate_all();
    release.send(()).unwrap();
    computing.join().unwrap();
    assert_eq!(C.get(&1), None);
    assert_eq!(C.get_or_compute(1, || "new"), "new");
    assert_eq!(C.get(&1), Some("new"));
}

// ---- 3. a nested computation that panics passes its reads ----

#[derive(Trackable)]
#[trackable(kind = "fresh.panic")]
struct Flaky {
    id: u32,
}

#[test]
fn a_nested_computation_that_panics_passes_its_reads_to_its_caller() {
    static INNER: Cache<u32, String> = Cache::new("fresh.panic.inner");
    static PAGE: Cache<u32, String> = Cache::new("fresh.panic.page").forever();
    let render = || {
        PAGE.get_or_compute(1, || {
            let inner = catch_unwind(AssertUnwindSafe(|| {
                INNER.get_or_compute(1, || {
                    track_id::<Flaky>(7u32);
                    panic!("the backend is down");
                })
            }));
            inner.unwrap_or_else(|_| "unavailable".to_owned())
        })
    };
    assert_eq!(render(), "unavailable");
    assert_eq!(
        dependents(&Dep::object(Flaky::KIND, &7u32)),
        1,
        "the page depends on what the panicking computation read"
    );
    invalidate_id::<Flaky>(7u32);
    assert_eq!(PAGE.get(&1), None, "fixing the data refreshes the page");
}

#[test]
fn a_block_recording_dropped_unstored_passes_its_reads() {
    static INNER: Cache<u32, u32> = Cache::new("fresh.block.inner");
    static PAGE: Cache<u32, u32> = Cache::new("fresh.block.page");
    PAGE.get_or_compute(1, || {
        if let ultracache::Lookup::Miss(recording) = INNER.begin(1) {
            track_id::<Flaky>(8u32);
            drop(recording); // gave up: nothing stored
        }
        0
    });
    assert_eq!(dependents(&Dep::object(Flaky::KIND, &8u32)), 1);
}

#[tokio::test]
async fn a_nested_future_that_is_cancelled_passes_its_reads() {
    static INNER: Cache<u32, u32> = Cache::new("fresh.cancel.inner");
    static PAGE: Cache<u32, u32> = Cache::new("fresh.cancel.page");
    PAGE.get_or_compute_async(1, async {
        let slow = INNER.get_or_compute_async(1, async {
            track_id::<Flaky>(9u32);
            std::future::pending::<()>().await;
            1
        });
        // A request timeout: the inner computation is dropped mid-way.
        tokio::time::timeout(Duration::from_millis(1), slow)
            .await
            .unwrap_or(0)
    })
    .await;
    assert_eq!(dependents(&Dep::object(Flaky::KIND, &9u32)), 1);
}

// ---- 4. failed leaders hand over ----

/// `callers` threads miss one key at once; the first leader fails with
/// `fail` once every other caller waits, the next one succeeds.
fn hand_over(
    name: &'static str,
    cache: &'static Cache<u32, u32>,
    fail: fn() -> Option<u32>,
) -> usize {
    const CALLERS: usize = 5;
    let runs = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(AtomicBool::new(true));
    let start = Arc::new(Barrier::new(CALLERS));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (runs, first, start) = (Arc::clone(&runs), Arc::clone(&first), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                catch_unwind(AssertUnwindSafe(|| {
                    cache.try_get_or_compute(1, || {
                        runs.fetch_add(1, SeqCst);
                        if first.swap(false, SeqCst) {
                            wait_until("every other caller waits", || {
                                stats().cache(name).map_or(0, |c| c.coalesced)
                                    >= (CALLERS - 1) as u64
                            });
                            return fail().ok_or(());
                        }
                        Ok(42)
                    })
                }))
            })
        })
        .collect();
    for caller in callers {
        let _ = caller.join().unwrap();
    }
    assert_eq!(cache.get(&1), Some(42));
    runs.load(SeqCst)
}

#[test]
fn a_leader_that_panics_hands_over_to_one_waiter() {
    static C: Cache<u32, u32> = Cache::new("fresh.handover.panic");
    let runs = hand_over("fresh.handover.panic", &C, || panic!("leader failed"));
    assert_eq!(runs, 2, "one more body run, not one per waiter");
}

#[test]
fn a_leader_that_stores_nothing_hands_over_to_one_waiter() {
    static C: Cache<u32, u32> = Cache::new("fresh.handover.err");
    let runs = hand_over("fresh.handover.err", &C, || None);
    assert_eq!(runs, 2, "one more body run, not one per waiter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_is_cancelled_hands_over_to_one_waiter() {
    static C: Cache<u32, u32> = Cache::new("fresh.handover.cancel");
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    const WAITERS: usize = 4;
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let leader = tokio::spawn(C.get_or_compute_async(1, async move {
        RUNS.fetch_add(1, SeqCst);
        let _ = started_tx.send(());
        std::future::pending::<u32>().await
    }));
    started.await.unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            tokio::spawn(C.get_or_compute_async(1, async {
                RUNS.fetch_add(1, SeqCst);
                42
            }))
        })
        .collect();
    let deadline = Instant::now() + BOUND;
    while stats()
        .cache("fresh.handover.cancel")
        .map_or(0, |c| c.coalesced)
        < WAITERS as u64
    {
        assert!(Instant::now() < deadline, "waiters never waited");
        tokio::task::yield_now().await;
    }
    leader.abort(); // a request timeout
    for w in waiters {
        assert_eq!(tokio::time::timeout(BOUND, w).await.unwrap().unwrap(), 42);
    }
    assert_eq!(
        RUNS.load(SeqCst),
        2,
        "one more body run, not one per waiter"
    );
}

// ---- 5. unrelated writes do not starve wide pages ----

#[derive(Trackable)]
#[trackable(kind = "fresh.wide")]
struct Row {
    id: u32,
}

#[test]
fn unrelated_writes_during_a_wide_computation_do_not_refuse_it() {
    static WIDE: Cache<u32, u32> = Cache::new("fresh.wide");
    let mut stored = 0;
    for attempt in 0..100u32 {
        WIDE.get_or_compute(attempt, || {
            for id in 0..1000u32 {
                track_id::<Row>(attempt * 1_000_000 + id);
            }
            // 200 writes of other rows while the page renders.
            for id in 0..200u32 {
                ultracache::invalidate_deps(&[Dep::object(
                    Row::KIND,
                    &(attempt * 1_000_000 + 500_000 + id),
                )]);
            }
            attempt
        });
        if WIDE.get(&attempt).is_some() {
            stored += 1;
        }
    }
    assert_eq!(stored, 100, "wide pages refused by unrelated writes");
}

#[test]
fn a_related_write_during_a_wide_computation_still_refuses_it() {
    static WIDE: Cache<u32, u32> = Cache::new("fresh.wide.related");
    WIDE.get_or_compute(1, || {
        for id in 0..1000u32 {
            track_id::<Row>(9_000_000 + id);
        }
        invalidate_id::<Row>(9_000_999u32);
        1
    });
    assert_eq!(WIDE.get(&1), None);
}

// ---- 6. reads on spawned tasks and threads ----

#[derive(Trackable)]
#[trackable(kind = "fresh.spawned")]
struct Spawned {
    id: u32,
}

#[test]
fn reads_on_scoped_threads_are_recorded_through_the_frame() {
    static C: Cache<u32, u32> = Cache::new("fresh.spawned.threads");
    C.get_or_compute(1, || {
        let frame = Frame::current();
        assert!(frame.is_recording());
        thread::scope(|s| {
            for id in 0..4u32 {
                let frame = frame.clone();
                s.spawn(move || frame.in_scope(|| track_id::<Spawned>(id)));
            }
        });
        1
    });
    for id in 0..4u32 {
        assert_eq!(
            dependents(&Dep::object(Spawned::KIND, &id)),
            1,
            "read on thread {id}"
        );
    }
    invalidate_id::<Spawned>(3u32);
    assert_eq!(C.get(&1), None);
}

#[test]
fn a_panic_on_a_scoped_thread_still_records_its_reads() {
    let ((), deps) = capture(|| {
        let frame = Frame::current();
        thread::scope(|s| {
            let t = s.spawn(|| {
                frame.in_scope(|| {
                    track_id::<Spawned>(70u32);
                    panic!("worker failed");
                })
            });
            assert!(t.join().is_err());
        });
    });
    assert_eq!(deps.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_spawned_tasks_are_recorded_through_the_frame() {
    static C: Cache<u32, u32> = Cache::new("fresh.spawned.tasks");
    C.get_or_compute_async(1, async {
        let tasks: Vec<_> = (10..14u32)
            .map(|id| {
                tokio::spawn(
                    async move {
                        tokio::task::yield_now().await;
                        track_id::<Spawned>(id);
                    }
                    .in_current_frame(),
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        1
    })
    .await;
    for id in 10..14u32 {
        assert_eq!(
            dependents(&Dep::object(Spawned::KIND, &id)),
            1,
            "read on task {id}"
        );
    }
}

#[test]
fn a_frame_outside_any_computation_records_nothing() {
    let frame = Frame::current();
    assert!(!frame.is_recording());
    assert_eq!(frame.in_scope(|| 5), 5);
}

#[test]
fn reads_sent_after_the_computation_finished_are_not_part_of_it() {
    static C: Cache<u32, Frame> = Cache::new("fresh.spawned.late");
    let frame = C.get_or_compute(1, Frame::current);
    assert!(frame.is_recording());
    // A straggler reads after the computation was stored: the stored entry
    // does not depend on it (it never saw the value).
    frame.in_scope(|| track_id::<Spawned>(99u32));
    assert_eq!(dependents(&Dep::object(Spawned::KIND, &99u32)), 0);
    assert!(C.get(&1).is_some());
}

#[test]
fn a_hit_on_an_entry_replaced_meanwhile_does_not_refuse_the_computation() {
    static INNER: Cache<u32, u32> = Cache::new("fresh.replaced.inner");
    static OUTER: Cache<u32, u32> = Cache::new("fresh.replaced.outer");
    INNER.get_or_compute(1, || {
        track_id::<Row>(77_000_000u32);
        1
    });
    OUTER.get_or_compute(1, || {
        let v = INNER.get(&1).unwrap_or(0);
        // A newer value replaces the one this computation used; nothing it
        // read was invalidated.
        INNER.insert(1, 2, &[]);
        v
    });
    assert_eq!(
        OUTER.get(&1),
        Some(1),
        "refused for a replacement, not a write"
    );
}
