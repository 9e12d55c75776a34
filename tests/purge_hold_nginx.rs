//! nginx (with the cache-purge module) stops answering for a few seconds
//! during writes: every purge of those writes lands once it answers again —
//! held and retried, counted while it waits, never given up within the
//! hold. A real nginx, paused with SIGSTOP (master and workers).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::routing::get;
use axum::Router;
use common::proxies::{fetch, skip, start_nginx};
use common::Runs;
use ultracache::http::CacheLayer;
use ultracache::purge::{self, NginxPurger, PurgeOptions};
use ultracache::{invalidate, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "hold_nginx.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

/// Sends `sig` to nginx's master and its workers.
fn signal_tree(pid: u32, sig: &str) {
    let children = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for p in children
        .split_whitespace()
        .chain([pid.to_string().as_str()])
    {
        let _ = Command::new("kill").args([sig, p]).status();
    }
}

/// nginx paused until dropped (also when an assertion fails).
struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        signal_tree(self.0, "-CONT");
    }
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_of_writes_made_while_nginx_is_paused_land_when_it_is_back() {
    let runs = Arc::new(Runs::new());
    let r = Arc::clone(&runs);
    let app = Router::new()
        .route(
            "/posts/{id}",
            get(move |UrlPath(id): UrlPath<i64>| {
                let r = Arc::clone(&r);
                async move {
                    let post = load(id);
                    r.hit();
                    format!("post {} run {}", post.id, r.get())
                }
            }),
        )
        .layer(
            CacheLayer::new(Duration::from_secs(3600)).shared_max_age(Duration::from_secs(3600)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let Some((nginx, port)) = start_nginx(app_port) else {
        return skip("nginx with the cache-purge module is not available");
    };
    purge::install(
        vec![Arc::new(NginxPurger::new(format!(
            "http://127.0.0.1:{port}"
        )))],
        PurgeOptions::default().timeout(Duration::from_millis(300)),
    )
    .expect("installed once");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/posts/1");
    let (_, old) = fetch(&client, &url).await;
    let (proxy, again) = fetch(&client, &url).await;
    assert_eq!((proxy.as_str(), again.as_str()), ("HIT", old.as_str()));

    signal_tree(nginx.0.id(), "-STOP");
    let paused = Paused(nginx.0.id());
    invalidate(&load(1));
    until("the purge has been retried four times", || {
        purge::stats().retried >= 4
    })
    .await;
    let stats = purge::stats();
    assert_eq!(stats.failed, 0, "the purge was given up: {stats:?}");
    assert_eq!(stats.waiting, 1, "{stats:?}");
    drop(paused);

    until("the purge lands", || purge::stats().sent >= 1).await;
    let (_, fresh) = fetch(&client, &url).await;
    assert_ne!(
        fresh, old,
        "the page the write changed is still nginx's old copy"
    );
    assert_eq!(purge::stats().waiting, 0);
    drop(nginx);
}
