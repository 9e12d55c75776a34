//! The shared tier on a Redis Cluster of the test's own (three primaries,
//! one replica each) when the primary serving the prefix crashes and its
//! replica takes over: calls fail open meanwhile, then the tier reads the
//! entries the replica kept, and an invalidation drops them there.
//!
//! Needs redis-server and redis-cli; without them the test says so loudly
//! and passes; with `CI=true` it fails.

mod common;

use common::redis_cluster::Cluster;
use common::redis_server::{skip, wait_until};
use common::Runs;
use serde::{Deserialize, Serialize};
use ultracache::{invalidate, tracks, Cache, Config, Trackable};

#[derive(Clone, Debug, Serialize, Deserialize, Trackable)]
#[trackable(kind = "failover.post")]
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

static NODE_A: Cache<i64, String> = Cache::new("failover-titles").forever().shared();

#[test]
fn a_primary_that_fails_over_to_its_replica_is_followed() {
    let Some(mut cluster) = Cluster::start_with(1) else {
        skip("Redis Cluster failover");
        return;
    };
    let prefix = format!("failover-{}", std::process::id());
    let tick = format!("{{{prefix}}}tick");
    // Seeded with every node, as an operator configures a cluster.
    let seeds: Vec<String> = cluster.ports.iter().map(|&p| cluster.url(p)).collect();
    Config::new()
        .redis_cluster(seeds)
        .redis_prefix(prefix.clone())
        .install()
        .expect("configured once");
    // On the primary that serves the prefix: what every node reads.
    let entries = |cluster: &Cluster| {
        cluster.keys_on_owner_of(&tick, &format!("{{{prefix}}}e:failover-titles:*"))
    };

    let runs = Runs::new();
    NODE_A.get_or_compute(9, || {
        runs.hit();
        load(9).title
    });
    wait_until("the title is in the cluster", || {
        entries(&cluster).len() == 1
    });
    cluster.replicate(&tick);

    let primary = cluster.owner(&tick);
    cluster.kill(primary);
    wait_until("a replica serves the prefix", || {
        cluster.try_owner(&tick).is_some()
    });

    // Another node's L1 (a cache of the same name, made afresh each try)
    // reads the entry from the promoted replica once the tier follows it.
    wait_until("the tier reads from the new primary", || {
        let node_b: Cache<i64, String> = Cache::new("failover-titles").forever().shared();
        let title = node_b.get_or_compute(9, || load(9).title);
        assert_eq!(title, "post 9");
        node_b.stats().shared_hits == 1
    });

    // A write after the failover drops the entry on the new primary.
    invalidate(&load(9));
    assert_eq!(NODE_A.get(&9), None);
    wait_until("the entry is dropped on the new primary", || {
        entries(&cluster).is_empty()
    });
    let title = NODE_A.get_or_compute(9, || {
        runs.hit();
        load(9).title
    });
    assert_eq!(title, "post 9");
    assert_eq!(runs.get(), 2, "computed again after the write");
    wait_until("the new value is stored on the new primary", || {
        entries(&cluster).len() == 1
    });
}
