//! Bad data in Redis is bad data, not an outage, and never a stale page:
//! another type under an entry key is dropped and read as a miss; garbage
//! under the tick is repaired by the next invalidation, which still reaches
//! every node; a registry key of another type neither stops a store nor an
//! invalidation halfway; and a Redis that restarts empty never counts its
//! ticks from below the ones it gave before. Against a redis-server of the
//! test's own.

mod common;

use std::time::Duration;

use common::redis_server::{free_port, start_redis, wait_until};
use common::Runs;
use serde::{Deserialize, Serialize};
use ultracache::redis::tier_stats;
use ultracache::{cached, invalidate, tracks, Config, Trackable};

#[derive(Clone, Debug, Serialize, Deserialize, Trackable)]
#[trackable(kind = "corrupt.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

static RUNS: Runs = Runs::new();

#[cached(shared, forever)]
fn page(id: i64) -> i64 {
    RUNS.hit();
    load(id).id * 10
}

fn entry_keys(r: &mut redis::Connection) -> Vec<String> {
    redis::cmd("KEYS").arg("{corrupt}e:*").query(r).unwrap()
}

/// Drops every node's in-process copies (what a `clear` from another node
/// sends), so the next read asks Redis.
fn drop_l1(r: &mut redis::Connection) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg("{corrupt}invalidations")
        .arg("clear")
        .query(r)
        .unwrap();
}

#[test]
fn bad_data_in_redis_is_a_miss_not_an_outage_and_never_a_stale_page() {
    let port = free_port();
    let Some(mut server) = start_redis(port) else {
        common::redis_server::skip("corruption");
        return;
    };
    Config::new()
        .redis(format!("redis://127.0.0.1:{port}"))
        .redis_prefix("corrupt")
        .redis_timeout(Duration::from_millis(500))
        .install()
        .expect("configured once");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut r = client.get_connection().unwrap();

    // Another type under an entry key: deleted, read as a miss, no outage.
    assert_eq!(page(1), 10);
    wait_until("Redis stores the page", || entry_keys(&mut r).len() == 1);
    let key = entry_keys(&mut r).remove(0);
    let _: () = redis::cmd("DEL").arg(&key).query(&mut r).unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("f")
        .arg("v")
        .query(&mut r)
        .unwrap();
    let errors = tier_stats().errors;
    drop_l1(&mut r);
    let runs = RUNS.get();
    wait_until("the L1 copy is dropped and the page computed again", || {
        page(1);
        RUNS.get() > runs
    });
    assert_eq!(page(1), 10);
    assert_eq!(tier_stats().errors, errors, "bad data counted as an outage");
    wait_until("the damaged key is replaced by the entry", || {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut r).unwrap();
        kind == "string"
    });

    // Garbage under the tick: reads go on; an invalidation repairs it and
    // still reaches Redis (the entry goes) and every node (the message).
    let _: () = redis::cmd("SET")
        .arg("{corrupt}tick")
        .arg("garbage")
        .query(&mut r)
        .unwrap();
    assert_eq!(page(2), 20);
    wait_until("Redis stores page 2", || entry_keys(&mut r).len() == 2);
    let errors = tier_stats().errors;
    invalidate(&load(2));
    let tick: String = redis::cmd("GET")
        .arg("{corrupt}tick")
        .query(&mut r)
        .unwrap();
    assert!(tick.parse::<u64>().is_ok(), "the tick was repaired: {tick}");
    assert_eq!(entry_keys(&mut r).len(), 1, "page 2's entry was dropped");
    assert_eq!(tier_stats().errors, errors);

    // A registry key of another type: the store replaces it, and an
    // invalidation of it completes.
    let _: () = redis::cmd("SET")
        .arg("{corrupt}dep:corrupt.post:3")
        .arg("not a set")
        .query(&mut r)
        .unwrap();
    let stores = tier_stats().stores;
    assert_eq!(page(3), 30);
    wait_until("page 3 is stored despite the damaged registry", || {
        tier_stats().stores > stores
    });
    let runs = RUNS.get();
    invalidate(&load(3));
    assert_eq!(page(3), 30);
    assert_eq!(RUNS.get(), runs + 1);
    let kind: String = redis::cmd("TYPE")
        .arg("{corrupt}dep:corrupt.post:3")
        .query(&mut r)
        .unwrap();
    // Dropped with its entries (or a set again, for page 3 stored anew).
    assert_ne!(kind, "string", "the damaged registry key is still there");

    // Redis restarts empty: its first tick is not below the ones before.
    let before: u64 = redis::cmd("GET")
        .arg("{corrupt}tick")
        .query::<String>(&mut r)
        .unwrap()
        .parse()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    server = start_redis(port).expect("redis-server starts again");
    let mut r = client.get_connection().unwrap();
    wait_until("the tier writes to the new Redis", || {
        invalidate(&load(4));
        redis::cmd("GET")
            .arg("{corrupt}tick")
            .query::<Option<String>>(&mut r)
            .unwrap()
            .is_some()
    });
    let after: u64 = redis::cmd("GET")
        .arg("{corrupt}tick")
        .query::<String>(&mut r)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        after > before,
        "the tick went back from {before} to {after}"
    );
    let _ = server.kill();
    let _ = server.wait();
}
