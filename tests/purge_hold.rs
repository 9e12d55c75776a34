//! A proxy that stops answering for a few seconds during writes gets every
//! purge of those writes once it answers again: purges are held and retried
//! (bounded, counted while they wait), not given up after a few tries. A real
//! Varnish, paused with SIGSTOP.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::routing::get;
use axum::Router;
use common::proxies::{fetch, skip, start_varnish};
use common::Runs;
use ultracache::http::CacheLayer;
use ultracache::purge::{self, PurgeOptions, VarnishMode, VarnishPurger};
use ultracache::{invalidate, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "hold.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

/// Sends `sig` to varnishd and its worker process.
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

/// varnishd paused until dropped (also when an assertion fails: a stopped
/// process would never stop on the test's TERM, and the test would hang).
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> Self {
        signal_tree(pid, "-STOP");
        Paused(pid)
    }
}

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
async fn purges_of_writes_made_while_the_proxy_is_paused_land_when_it_is_back() {
    let runs = Arc::new(Runs::new());
    let r = Arc::clone(&runs);
    let app = Router::new()
        .route(
            "/posts/{id}",
            get(
                move |UrlPath(id): UrlPath<i64>, headers: axum::http::HeaderMap| {
                    let r = Arc::clone(&r);
                    async move {
                        let post = load(id);
                        r.hit();
                        let host = headers
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        format!("post {} run {} for {host}", post.id, r.get())
                    }
                },
            ),
        )
        .layer(
            CacheLayer::new(Duration::from_secs(3600)).shared_max_age(Duration::from_secs(3600)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let Some((varnish, port)) = start_varnish(app_port, "varnish-hold") else {
        return skip("varnishd (apt-get install varnish) is not available");
    };
    // Attempts time out fast; with the old give-up after three retries a
    // purge was lost in under two seconds of outage.
    purge::install(
        vec![Arc::new(VarnishPurger::new(
            format!("http://127.0.0.1:{port}"),
            VarnishMode::Url,
        ))],
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

    let paused = Paused::new(varnish.0.id());
    invalidate(&load(1));
    // Past the point where purges used to be given up: it is still held.
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
        "the page the write changed is still the proxy's old copy"
    );
    assert_eq!(purge::stats().waiting, 0);

    // A page the proxy cached under the public host name is purged under it.
    let url = format!("http://127.0.0.1:{port}/posts/2");
    let public = |c: &reqwest::Client| c.get(&url).header("host", "www.example.com").send();
    let old = public(&client).await.unwrap().text().await.unwrap();
    assert!(old.ends_with("for www.example.com"), "{old}");
    let r = public(&client).await.unwrap();
    assert_eq!(r.headers()["x-proxy-cache"], "HIT");
    assert_eq!(r.text().await.unwrap(), old);
    let sent = purge::stats().sent;
    invalidate(&load(2));
    until("the purge is sent", || purge::stats().sent > sent).await;
    let fresh = public(&client).await.unwrap().text().await.unwrap();
    assert_ne!(
        fresh, old,
        "the page cached under the public host is still served"
    );
    drop(varnish);
}
