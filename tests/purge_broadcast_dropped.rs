//! Purges that cannot be published for the whole hold are dropped visibly:
//! counted in `purge::stats().unpublished` (and each logged with what it
//! would have purged), never retried forever nor lost without a trace. The
//! broadcast is a real Redis client pointed at a port nothing listens on.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::free_port;
use ultracache::purge::{self, PurgeOptions, RedisBroadcast};
use ultracache::{invalidate, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "dropped.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

#[test]
fn purges_the_broadcast_never_took_are_counted_once_the_hold_is_over() {
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    purge::install(
        Vec::new(),
        PurgeOptions::default()
            .broadcast(Arc::new(
                RedisBroadcast::new(&nowhere, "dropped").expect("a client"),
            ))
            .hold(Duration::from_millis(600)),
    )
    .expect("installed once");
    for id in 1..=3 {
        invalidate(&load(id));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = purge::stats();
        if stats.unpublished == 3 {
            assert_eq!(stats.published, 0);
            assert_eq!(stats.unpublished_waiting, 0, "{stats:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the purges were neither published nor counted as dropped: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
