//! The shared tier's registry stays near the entries alive: under steady
//! traffic of entries that expire, one object's dependency set does not grow
//! with every entry ever stored. Against a redis-server of the test's own.

mod common;

use std::time::{Duration, Instant};

use common::redis_server::{free_port, start_redis, wait_until};
use serde::{Deserialize, Serialize};
use ultracache::{track, Cache, Config, Trackable};

#[derive(Clone, Debug, Serialize, Deserialize, Trackable)]
#[trackable(kind = "registry.post")]
struct Post {
    id: i64,
}

/// Entries that live 300 ms, all depending on post 1.
static SHORT: Cache<i64, i64> = Cache::new("registry.short")
    .timeout(Duration::from_millis(300))
    .shared();

fn count(r: &mut redis::Connection, what: &str) -> usize {
    redis::cmd("SCARD").arg(what).query(r).unwrap()
}

fn live_entries(r: &mut redis::Connection) -> usize {
    redis::cmd("KEYS")
        .arg("{registry}e:*")
        .query::<Vec<String>>(r)
        .unwrap()
        .len()
}

#[test]
fn a_dependency_set_stays_near_the_entries_alive_under_steady_traffic() {
    let port = free_port();
    let Some(mut server) = start_redis(port) else {
        common::redis_server::skip("registry");
        return;
    };
    Config::new()
        .redis(format!("redis://127.0.0.1:{port}"))
        .redis_prefix("registry")
        .install()
        .expect("configured once");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut r = client.get_connection().unwrap();
    let post = Post { id: 1 };
    // Steady traffic: new entries all the time, each living 300 ms, for
    // five lifetimes; the dependency set is extended by every store and so
    // never expires.
    let start = Instant::now();
    let mut stored = 0;
    while start.elapsed() < Duration::from_millis(1500) || stored < 1000 {
        SHORT.get_or_compute(stored, || {
            track(&post);
            stored
        });
        stored += 1;
    }
    wait_until("the last entries are stored", || {
        redis::cmd("EXISTS")
            .arg("{registry}dep:registry.post:1")
            .query::<i64>(&mut r)
            .unwrap()
            == 1
    });
    let live = live_entries(&mut r);
    let members = count(&mut r, "{registry}dep:registry.post:1");
    eprintln!("registry: {members} members for {live} live entries ({stored} stored)");
    assert!(
        // Each store looks at three members: at equilibrium about a third
        // are dead, so the set is near 1.5 times the live entries (without
        // pruning it holds every entry ever stored).
        members <= 2 * live + 50 && (members as i64) < stored / 2,
        "{members} members for {live} live entries ({stored} stored in all)"
    );
    let _ = server.kill();
    let _ = server.wait();
    server = start_redis(free_port()).expect("redis-server");
    let _ = server.kill();
    let _ = server.wait();
}
