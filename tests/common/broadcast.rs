//! The broadcast scenario shared by the Redis and RabbitMQ tests: node 1 (the
//! test process) has a Varnish in front of it; node 2 (the test binary run
//! again as a child process) writes an object; node 1's Varnish forgets the
//! page that showed it.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::http::HeaderName;
use axum::routing::get;
use axum::Router;
use ultracache::http::CacheLayer;
use ultracache::purge::{self, PurgeOptions, Transport, VarnishMode, VarnishPurger};
use ultracache::{invalidate, tracks, Trackable};

use super::proxies::{skip, start_varnish};

pub const CHILD: &str = "ULTRACACHE_BROADCAST_CHILD";

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "broadcast.post")]
pub struct Post {
    pub id: i64,
}

#[tracks]
pub fn load(id: i64) -> Post {
    Post { id }
}

async fn proxy_cache(client: &reqwest::Client, url: &str) -> String {
    let r = client.get(url).send().await.expect("request");
    r.headers()
        .get("x-proxy-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Node 1: a Varnish in front of this node is purged by a write on node 2.
/// `transport` is `None` when the broker is not reachable.
pub async fn node_one(
    transport: Option<Arc<dyn Transport>>,
    child_test: &str,
    env: &[(&str, String)],
) {
    let Some(transport) = transport else {
        return skip("the broadcast transport is not reachable");
    };
    let app = Router::new()
        .route(
            "/broadcast/posts/{id}",
            get(|UrlPath(id): UrlPath<i64>| async move { format!("post {}", load(id).id) }),
        )
        .layer(
            CacheLayer::new(Duration::from_secs(3600))
                .shared_max_age(Duration::from_secs(3600))
                .surrogate_keys(HeaderName::from_static("xkey")),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let Some((_varnish, port)) = start_varnish(app_port, "broadcast") else {
        return skip("varnishd with vmod xkey is not available");
    };
    purge::install(
        vec![Arc::new(VarnishPurger::new(
            format!("http://127.0.0.1:{port}"),
            VarnishMode::Xkey,
        ))],
        PurgeOptions::default().broadcast(transport),
    )
    .expect("installed once");

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/broadcast/posts/1");
    assert_eq!(proxy_cache(&client, &url).await, "MISS");
    assert_eq!(proxy_cache(&client, &url).await, "HIT");

    // Wait until this node listens, so that the write is not published
    // before anyone hears it: it hears its own purge of another object (a
    // purge published before the subscription is up reaches nobody: probe
    // again until one is heard).
    let deadline = Instant::now() + Duration::from_secs(30);
    'probe: while purge::stats().received < 1 {
        assert!(
            Instant::now() < deadline,
            "node 1 never heard its own purge"
        );
        invalidate(&load(999));
        let heard = Instant::now() + Duration::from_millis(500);
        while Instant::now() < heard {
            if purge::stats().received >= 1 {
                break 'probe;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let probes_heard = purge::stats().received;
    let mut child = Command::new(std::env::current_exe().expect("test binary"));
    child
        .args(["--exact", child_test, "--ignored", "--nocapture"])
        .env(CHILD, "1");
    for (k, v) in env {
        child.env(k, v);
    }
    let status = child.status().expect("node 2 runs");
    assert!(status.success(), "node 2 failed");

    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy_cache(&client, &url).await != "MISS" {
        assert!(
            Instant::now() < deadline,
            "node 1's Varnish was never purged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        purge::stats().received > probes_heard,
        "node 2's purge was received"
    );
}

/// Node 2: writes post 1 and waits until the purge is published.
pub async fn node_two(transport: Arc<dyn Transport>) {
    purge::install(Vec::new(), PurgeOptions::default().broadcast(transport))
        .expect("installed once");
    invalidate(&load(1));
    let deadline = Instant::now() + Duration::from_secs(20);
    while purge::stats().published < 1 {
        assert!(
            Instant::now() < deadline,
            "node 2 never published its purge"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
