//! Purges broadcast over Redis pub/sub: a write on one node purges the proxy
//! of another. Two processes: this test, and the test binary run again as
//! the second node.

mod common;

use std::sync::Arc;

use common::broadcast::{node_one, node_two, CHILD};
use ultracache::purge::{RedisBroadcast, Transport};

fn transport(channel: &str) -> Option<Arc<dyn Transport>> {
    let url =
        std::env::var("ULTRACACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url.as_str()).ok()?;
    client
        .get_connection_with_timeout(std::time::Duration::from_secs(2))
        .ok()?;
    Some(Arc::new(RedisBroadcast::new(&url, channel).ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_purges_the_proxy_of_another_over_redis() {
    let channel = format!("ultracache-test-purges-{}", std::process::id());
    node_one(
        transport(&channel),
        "second_node",
        &[("ULTRACACHE_TEST_CHANNEL", channel.clone())],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the broadcast test as its second node"]
async fn second_node() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let channel = std::env::var("ULTRACACHE_TEST_CHANNEL").expect("channel");
    node_two(transport(&channel).expect("Redis")).await;
}
