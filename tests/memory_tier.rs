//! The multi-node protocol on the in-process shared tier (`MemoryTier`),
//! without a Redis server: this process is one node, the tier's handle acts
//! as the others. The same behaviour against a real Redis is in
//! `redis_tier.rs`.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Mutex, MutexGuard, Once};
use std::thread;
use std::time::Duration;

use ultracache::{cached, clear_store, track_id, Cache, Config, Dep, MemoryTier, Trackable};

static TIER: std::sync::LazyLock<MemoryTier> = std::sync::LazyLock::new(MemoryTier::new);

/// Installs the tier once; the tests of this file take turns (one of them
/// takes the tier down).
fn setup() -> MutexGuard<'static, ()> {
    static INSTALL: Once = Once::new();
    static SERIAL: Mutex<()> = Mutex::new(());
    INSTALL.call_once(|| {
        Config::new()
            .memory_tier(&TIER)
            .install()
            .expect("installed once, before any cache is used");
    });
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Trackable)]
#[trackable(kind = "memtier.post")]
struct Post {
    id: u32,
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(shared, forever)]
fn title(id: u32) -> String {
    RUNS.fetch_add(1, SeqCst);
    track_id::<Post>(id);
    format!("post {id}")
}

#[test]
fn a_value_another_node_computed_is_served_without_computing() {
    let _turn = setup();
    assert_eq!(title(1), "post 1");
    let runs = RUNS.load(SeqCst);
    // This node forgets its own copy (a fresh node starts empty).
    assert!(clear_store("default"));
    assert_eq!(title(1), "post 1");
    assert_eq!(RUNS.load(SeqCst), runs, "served from the shared tier");
}

#[test]
fn a_write_on_another_node_drops_the_entry_here_and_in_the_tier() {
    let _turn = setup();
    assert_eq!(title(2), "post 2");
    let before = TIER.len();
    assert!(TIER.invalidate_from_another_node(&[Dep::object(Post::KIND, &2u32)]) >= 1);
    assert!(TIER.len() < before, "the tier dropped it");
    let runs = RUNS.load(SeqCst);
    assert_eq!(title(2), "post 2");
    assert_eq!(RUNS.load(SeqCst), runs + 1, "computed again");
}

#[test]
fn a_computation_overtaken_by_a_write_on_another_node_is_stored_nowhere() {
    let _turn = setup();
    static SLOW: Cache<u32, String> = Cache::new("memtier.slow").shared();
    let (started_tx, started) = mpsc::channel();
    let (release, gate) = mpsc::channel::<()>();
    let computing = thread::spawn(move || {
        SLOW.get_or_compute(3, move || {
            track_id::<Post>(3u32);
            started_tx.send(()).unwrap();
            gate.recv_timeout(Duration::from_secs(30)).unwrap();
            "old".to_owned()
        })
    });
    started.recv_timeout(Duration::from_secs(30)).unwrap();
    TIER.invalidate_from_another_node(&[Dep::object(Post::KIND, &3u32)]);
    release.send(()).unwrap();
    assert_eq!(computing.join().unwrap(), "old");
    assert_eq!(SLOW.get(&3), None, "not stored on this node");
    assert!(clear_store("default"));
    assert_eq!(
        SLOW.get_or_compute(3, || "new".to_owned()),
        "new",
        "and not in the tier either"
    );
}

#[test]
fn a_tier_that_is_down_degrades_to_computing() {
    let _turn = setup();
    static DOWN: Cache<u32, String> = Cache::new("memtier.down").shared();
    TIER.set_down(true);
    let runs = AtomicUsize::new(0);
    let compute = || {
        runs.fetch_add(1, SeqCst);
        "value".to_owned()
    };
    assert_eq!(DOWN.get_or_compute(4, compute), "value");
    assert_eq!(
        DOWN.get_or_compute(4, compute),
        "value",
        "the local copy serves"
    );
    TIER.set_down(false);
    assert_eq!(runs.load(SeqCst), 1);
    assert!(ultracache::redis::tier_stats().errors >= 1);
}
