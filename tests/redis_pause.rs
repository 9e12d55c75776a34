//! A paused Redis (SIGSTOP) loses nothing and serves nothing stale once it
//! resumes: an idle writer's invalidation reaches Redis (and so every node)
//! without the writer calling again; the writer's first read after the pause
//! is not answered by the copy its write dropped; a clear made during the
//! pause is made when Redis is back. Against a redis-server of the test's own.

mod common;

use std::time::{Duration, Instant};

use common::redis_server::{free_port, signal, start_redis, wait_until};
use common::Runs;
use serde::{Deserialize, Serialize};
use ultracache::redis::tier_stats;
use ultracache::{cached, invalidate, tracks, Config, Trackable};

#[derive(Clone, Debug, Serialize, Deserialize, Trackable)]
#[trackable(kind = "pause.post")]
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

fn entries(r: &mut redis::Connection) -> usize {
    redis::cmd("KEYS")
        .arg("{pause}e:*")
        .query::<Vec<String>>(r)
        .unwrap()
        .len()
}

#[test]
fn a_paused_redis_loses_no_invalidation_and_serves_nothing_stale_after() {
    let port = free_port();
    let Some(mut server) = start_redis(port) else {
        common::redis_server::skip("pause");
        return;
    };
    Config::new()
        .redis(format!("redis://127.0.0.1:{port}"))
        .redis_prefix("pause")
        .redis_timeout(Duration::from_millis(100))
        .install()
        .expect("configured once");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut r = client.get_connection().unwrap();

    // An idle writer: its invalidation reaches Redis with no further call.
    assert_eq!(page(6), 60);
    wait_until("Redis stores page 6", || entries(&mut r) == 1);
    signal(&server, "-STOP");
    let start = Instant::now();
    invalidate(&load(6));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the write waited on Redis"
    );
    signal(&server, "-CONT");
    wait_until("the kept invalidation reaches Redis", || {
        entries(&mut r) == 0
    });

    // The writer's first read after the pause computes: the copy in Redis
    // is older than its write.
    assert_eq!(page(5), 50);
    wait_until("Redis stores page 5", || {
        if entries(&mut r) == 1 {
            return true;
        }
        // A store is skipped while this node still counts Redis as down
        // or owed (the reply of the kept invalidation, or a call that timed
        // out during the pause, may land just after Redis has the
        // invalidation): drop the copy and compute it again.
        invalidate(&load(5));
        assert_eq!(page(5), 50);
        false
    });
    let runs = RUNS.get();
    signal(&server, "-STOP");
    invalidate(&load(5));
    signal(&server, "-CONT");
    assert_eq!(page(5), 50);
    assert_eq!(
        RUNS.get(),
        runs + 1,
        "the first read after the pause was Redis's old copy"
    );
    wait_until("the invalidation lands", || entries(&mut r) == 0);

    // A clear during the pause is made when Redis is back.
    // (Values computed while an invalidation was still owed to Redis are
    // not offered to it: new pages until one is stored.)
    let mut id = 100;
    wait_until("Redis stores a page again", || {
        id += 1;
        page(id);
        entries(&mut r) >= 1
    });
    signal(&server, "-STOP");
    ultracache::clear();
    signal(&server, "-CONT");
    wait_until("the kept clear reaches Redis", || entries(&mut r) == 0);
    let errors = tier_stats().errors;
    assert!(errors >= 1, "the pause was seen");

    // The subscription is killed: the L1 is dropped as soon as the break is
    // noticed, not when the subscription is back.
    let mut id = 200;
    wait_until("Redis stores a page again", || {
        id += 1;
        page(id);
        entries(&mut r) >= 1
    });
    let reconnects = tier_stats().reconnects;
    // L1 misses (computed, or found in Redis) of the page's cache.
    let l1_misses = || {
        ultracache::stats()
            .cache("page")
            .map_or(0, |c| c.misses + c.shared_hits)
    };
    let before = l1_misses();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut r)
        .unwrap();
    // The page misses in the L1 once its copy is gone: that must happen
    // before the subscription is back (at least 200 ms after the break).
    wait_until("the L1 copy is dropped", || {
        assert_eq!(page(id), id * 10);
        l1_misses() > before
    });
    assert_eq!(
        tier_stats().reconnects,
        reconnects,
        "the L1 copy outlived the broken subscription until it was back"
    );

    let _ = server.kill();
    let _ = server.wait();
    server = start_redis(free_port()).expect("a last redis-server");
    let _ = server.kill();
    let _ = server.wait();
}
