//! Single flight across nodes: a key that misses on every node at once is
//! computed once for the cluster (the node holding the key's lease in Redis
//! computes; the others wait for its entry), and a lease whose computation
//! failed is handed on at once rather than held until it expires. Four
//! nodes' L1s in one process: caches of one name, each its own.
//!
//! Uses the Redis the shared-tier tests use; without it the tests say so
//! loudly and pass; with `CI=true` they fail.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::shared_tier::setup;
use ultracache::Cache;

static NODES: [Cache<u32, String>; 4] = [
    Cache::new("flight-pages").forever().shared(),
    Cache::new("flight-pages").forever().shared(),
    Cache::new("flight-pages").forever().shared(),
    Cache::new("flight-pages").forever().shared(),
];

/// Waits (bounded) until `cond`, or until `give_up` says waiting is
/// pointless; whether `cond` held.
fn wait_for(mut cond: impl FnMut() -> bool, mut give_up: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        if give_up() {
            return false;
        }
        std::thread::yield_now();
    }
    false
}

fn lease_waits() -> u64 {
    ultracache::redis::tier_stats().lease_waits
}

#[test]
fn a_key_that_misses_on_every_node_at_once_is_computed_once() {
    let Some(_) = setup() else { return };
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(NODES.len()));
    let waits_before = lease_waits();
    let threads: Vec<_> = (0..NODES.len())
        .map(|n| {
            let (runs, barrier) = (Arc::clone(&runs), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                NODES[n].get_or_compute(1, || {
                    let run = runs.fetch_add(1, SeqCst) + 1;
                    // The node computing holds on until the others are
                    // waiting for its value (or another node computes too,
                    // which the assertion below reports).
                    wait_for(
                        || lease_waits() >= waits_before + 3,
                        || runs.load(SeqCst) > run,
                    );
                    "page 1".to_owned()
                })
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("a node's call"), "page 1");
    }
    assert_eq!(runs.load(SeqCst), 1, "computed once for the four nodes");
    let shared_hits: u64 = NODES.iter().map(|c| c.stats().shared_hits).sum();
    assert_eq!(shared_hits, 3, "the other nodes got its value from Redis");
}

#[test]
fn a_failed_computation_hands_the_lease_on_at_once() {
    let Some(_) = setup() else { return };
    static FAILING: [Cache<u32, String>; 3] = [
        Cache::new("flight-failing").forever().shared(),
        Cache::new("flight-failing").forever().shared(),
        Cache::new("flight-failing").forever().shared(),
    ];
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(FAILING.len()));
    let waits_before = lease_waits();
    let threads: Vec<_> = (0..FAILING.len())
        .map(|n| {
            let (runs, barrier) = (Arc::clone(&runs), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                FAILING[n].try_get_or_compute(2, || {
                    let run = runs.fetch_add(1, SeqCst) + 1;
                    if run == 1 {
                        // The first computation fails once the others wait.
                        wait_for(
                            || lease_waits() >= waits_before + 2,
                            || runs.load(SeqCst) > run,
                        );
                        return Err("the database is down");
                    }
                    Ok("page 2".to_owned())
                })
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("a node's call"))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_err()).count(),
        1,
        "only the failed computation's caller sees its error: {results:?}"
    );
    assert_eq!(
        runs.load(SeqCst),
        2,
        "the lease went to one waiting node, which computed for the other"
    );
}
