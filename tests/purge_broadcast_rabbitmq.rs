//! Purges broadcast over a RabbitMQ fanout exchange (the transport
//! django-ultracache uses): a write on one node purges the proxy of another.
//! Two processes: this test, and the test binary run again as the second
//! node. RabbitMQ at 127.0.0.1:5672 (guest/guest) or `ULTRACACHE_AMQP_URL`.

mod common;

use std::sync::Arc;

use common::broadcast::{node_one, node_two, CHILD};
use ultracache::purge::{RabbitBroadcast, Transport};

fn url() -> String {
    std::env::var("ULTRACACHE_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn reachable() -> bool {
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().expect("address"),
        std::time::Duration::from_secs(2),
    )
    .is_ok()
        || std::env::var("ULTRACACHE_AMQP_URL").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_purges_the_proxy_of_another_over_rabbitmq() {
    let exchange = format!("ultracache-test-purges-{}", std::process::id());
    let transport: Option<Arc<dyn Transport>> = reachable().then(|| {
        Arc::new(RabbitBroadcast::new(url(), exchange.clone(), "node-1").transient())
            as Arc<dyn Transport>
    });
    node_one(
        transport,
        "second_node",
        &[("ULTRACACHE_TEST_EXCHANGE", exchange.clone())],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the broadcast test as its second node"]
async fn second_node() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let exchange = std::env::var("ULTRACACHE_TEST_EXCHANGE").expect("exchange");
    node_two(Arc::new(
        RabbitBroadcast::new(url(), exchange, "node-2").transient(),
    ))
    .await;
}
