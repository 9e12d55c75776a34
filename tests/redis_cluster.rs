//! The shared tier on a Redis Cluster of the test's own (three primaries):
//! connected through a node that does not own the prefix's slot (every call
//! is redirected), shared between two processes connected through different
//! nodes, invalidations reaching both (a message published on one node
//! reaches subscribers on all), and the prefix's slot moved to another
//! primary while the tier runs: entries stored before are still read, and an
//! invalidation after it drops them there.
//!
//! Needs redis-server and redis-cli; without them the test says so loudly
//! and passes; with `CI=true` it fails.

mod common;

use std::process::Command;

use common::redis_cluster::Cluster;
use common::redis_server::{skip, wait_until};
use common::shared_tier::CHILD;
use common::Runs;
use serde::{Deserialize, Serialize};
use ultracache::{cached, invalidate, tracks, Cache, Config, Trackable};

#[derive(Clone, Debug, Serialize, Deserialize, Trackable)]
#[trackable(kind = "cluster.post")]
struct Post {
    id: i64,
    title: String,
}

#[tracks]
fn load(id: i64) -> Post {
    Post {
        id,
        title: format!("post {id}"),
    }
}

static PAGE_RUNS: Runs = Runs::new();

#[cached(shared, forever)]
fn cluster_page(id: i64) -> String {
    PAGE_RUNS.hit();
    format!("<h1>{}</h1>", load(id).title)
}

fn page_stats() -> ultracache::CacheStats {
    ultracache::stats()
        .cache("cluster_page")
        .cloned()
        .unwrap_or_default()
}

// Two caches with one name share their Redis entries: two nodes' L1s in one
// process.
static NODE_A: Cache<i64, String> = Cache::new("cluster-titles").forever().shared();
static NODE_B: Cache<i64, String> = Cache::new("cluster-titles").forever().shared();

#[test]
fn the_tier_runs_on_a_redis_cluster_through_redirects_and_a_moved_slot() {
    let Some(cluster) = Cluster::start() else {
        skip("Redis Cluster");
        return;
    };
    let prefix = format!("cluster-{}", std::process::id());
    let tick = format!("{{{prefix}}}tick");
    // Seeded with a node that does not serve the prefix: every command is
    // redirected at first.
    let seed = cluster.not_owner(&tick);
    Config::new()
        .redis_cluster([cluster.url(seed)])
        .redis_prefix(prefix.clone())
        .install()
        .expect("configured once");
    let entries = |cache: &str| cluster.keys(&format!("{{{prefix}}}e:{cache}:*"));

    // Node 1 (this process) computes the page; it reaches the cluster.
    assert_eq!(cluster_page(1), "<h1>post 1</h1>");
    assert_eq!(PAGE_RUNS.get(), 1);
    wait_until("the page is in the cluster", || {
        !entries("cluster_page").is_empty()
    });

    // Node 2 (another process), seeded with the third node, reads it from
    // the cluster, then writes post 1.
    let third = *cluster
        .ports
        .iter()
        .find(|&&p| p != seed && p != cluster.owner(&tick))
        .expect("three primaries");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "second_node", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .env("ULTRACACHE_REDIS_CLUSTER", cluster.url(third))
        .env("ULTRACACHE_REDIS_PREFIX", &prefix)
        .status()
        .expect("the second node runs");
    assert!(status.success(), "the second node's checks failed");

    // Its write dropped the page from the cluster and from this node's L1.
    wait_until("node 1 hears of the write", || page_stats().entries == 0);
    assert!(entries("cluster_page").is_empty());
    assert_eq!(cluster_page(1), "<h1>post 1</h1>");
    assert_eq!(PAGE_RUNS.get(), 2, "computed again after the write");

    // A value stored before the prefix's slot moves to another primary.
    let runs = Runs::new();
    NODE_A.get_or_compute(7, || {
        runs.hit();
        load(7).title
    });
    wait_until("the title is in the cluster", || {
        entries("cluster-titles").len() == 1
    });
    let to = cluster.not_owner(&tick);
    cluster.move_slot_of(&tick, to);

    // Read after the move: a hit from the new primary, not a computation.
    let title = NODE_B.get_or_compute(7, || {
        runs.hit();
        load(7).title
    });
    assert_eq!(title, "post 7");
    assert_eq!(runs.get(), 1, "read from the cluster after the slot moved");
    assert_eq!(NODE_B.stats().shared_hits, 1);

    // An invalidation after the move drops the entry where it now lives,
    // and both copies in this process.
    invalidate(&load(7));
    assert_eq!(NODE_A.get(&7), None);
    assert_eq!(NODE_B.get(&7), None);
    wait_until("the entry is dropped on its new primary", || {
        entries("cluster-titles").is_empty()
    });
    let title = NODE_A.get_or_compute(7, || {
        runs.hit();
        load(7).title
    });
    assert_eq!(title, "post 7");
    assert_eq!(runs.get(), 2, "computed again after the write");
    wait_until("the new value is stored on the new primary", || {
        entries("cluster-titles").len() == 1
    });
    // Redirects and the moved slot were followed, not failed open through.
    let stats = ultracache::redis::tier_stats();
    assert_eq!(stats.errors, 0, "no call failed: {stats:?}");
}

/// The second node of the test above: run by it, in its own process.
#[test]
#[ignore = "run by the cluster test as its second node"]
fn second_node() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    Config::new().install().expect("configured once");
    assert_eq!(cluster_page(1), "<h1>post 1</h1>");
    assert_eq!(
        PAGE_RUNS.get(),
        0,
        "node 2 did not compute: the cluster had it"
    );
    assert_eq!(page_stats().shared_hits, 1);
    invalidate(&load(1));
    wait_until("node 2's own copy is dropped", || page_stats().entries == 0);
}
