//! The sharded layout when a primary crashes during writes (three primaries,
//! one replica each): the invalidations made while its slots have no
//! primary reach some slots and not others; they are kept and sent again
//! until every step lands, and no read — during the failover or after it —
//! returns a value older than the writes.
//!
//! Needs redis-server and redis-cli; without them the test says so loudly
//! and passes; with `CI=true` it fails.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};

use common::redis_cluster::Cluster;
use common::redis_server::{skip, wait_until};
use serde::{Deserialize, Serialize};
use ultracache::{invalidate, tracks, Cache, Config, Trackable};

#[derive(Clone, Debug, Serialize, Deserialize, Trackable)]
#[trackable(kind = "sharded-failover.post")]
struct Post {
    id: i64,
    version: i64,
}

static VERSION: AtomicI64 = AtomicI64::new(1);

#[tracks]
fn load(id: i64) -> Post {
    Post {
        id,
        version: VERSION.load(Ordering::SeqCst),
    }
}

static NODE_A: Cache<i64, i64> = Cache::new("sharded-failover").forever().shared();

const POSTS: i64 = 30;

/// Every post read by a node whose L1 starts empty: the versions, and how
/// many came from the cluster.
fn fresh_read() -> (Vec<i64>, u64) {
    let node: Cache<i64, i64> = Cache::new("sharded-failover").forever().shared();
    let versions = (0..POSTS)
        .map(|id| node.get_or_compute(id, || load(id).version))
        .collect();
    (versions, node.stats().shared_hits)
}

#[test]
fn invalidations_made_while_a_primary_fails_over_are_not_lost() {
    let Some(mut cluster) = Cluster::start_with(1) else {
        skip("Redis Cluster failover");
        return;
    };
    let prefix = format!("sharded-failover-{}", std::process::id());
    let tick = format!("{{{prefix}}}tick");
    let seeds: Vec<String> = cluster.ports.iter().map(|&p| cluster.url(p)).collect();
    Config::new()
        .redis_cluster(seeds)
        .redis_prefix(prefix.clone())
        .redis_sharded(true)
        .redis_timeout(std::time::Duration::from_millis(200))
        .install()
        .expect("configured once");
    let entries = format!("{{{prefix}/e/*");

    for id in 0..POSTS {
        assert_eq!(NODE_A.get_or_compute(id, || load(id).version), 1);
    }
    wait_until("every page is in the cluster", || {
        cluster.keys(&entries).len() == POSTS as usize
    });
    // The victim: a primary that holds pages but not the tick.
    let tick_owner = cluster.owner(&tick);
    let victim_key = cluster
        .keys(&entries)
        .into_iter()
        .find(|k| cluster.owner(k) != tick_owner)
        .expect("pages on another primary than the tick's");
    let victim = cluster.owner(&victim_key);
    // Every write made so far (entries and registries) is on a replica: a
    // failover keeps it. (Writes a crash takes with it before they reach a
    // replica are lost to any Redis failover.)
    for key in cluster.keys(&entries) {
        cluster.replicate(&key);
    }
    for id in 0..POSTS {
        cluster.replicate(&format!("{{{prefix}/d/sharded-failover.post:{id}}}r"));
    }
    assert_eq!(fresh_read(), (vec![1; POSTS as usize], POSTS as u64));

    cluster.kill(victim);
    // Every post written while the victim's slots have no primary: each
    // invalidation reaches the slots still served and fails on the others.
    VERSION.store(2, Ordering::SeqCst);
    for id in 0..POSTS {
        invalidate(&Post { id, version: 2 });
        let (versions, _) = fresh_read();
        assert!(
            versions.iter().take(id as usize + 1).all(|&v| v == 2),
            "a written post read old during the failover: {versions:?}"
        );
    }
    wait_until("a replica serves the victim's slots", || {
        cluster.try_owner(&victim_key).is_some()
    });
    // Once the kept invalidations land, the cluster is read again: every
    // value read from it is new.
    wait_until("the pages are read from the cluster again", || {
        let (versions, from_cluster) = fresh_read();
        assert_eq!(
            versions,
            vec![2; POSTS as usize],
            "a value older than the writes after the failover"
        );
        from_cluster == POSTS as u64
    });
}
