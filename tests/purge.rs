//! Downstream purging against real proxies started by the test on free
//! loopback ports with the configurations shipped in `proxy/`: Varnish purged
//! by URL, Varnish purged by surrogate key (xkey), nginx with the cache-purge
//! module, and a purger whose proxy is down.
//!
//! Without varnishd or nginx the test says so loudly and passes; with
//! `CI=true` it fails (`.ci/run` installs them).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::http::HeaderName;
use axum::routing::get;
use axum::Router;
use common::proxies::{fetch, free_port, skip, start_nginx, start_varnish};
use common::Runs;
use ultracache::http::CacheLayer;
use ultracache::purge::{self, NginxPurger, PurgeOptions, VarnishMode, VarnishPurger};
use ultracache::{invalidate, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "purge.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

/// Fetches `url` until `cond` holds (bounded): purges land asynchronously.
async fn fetch_until(client: &reqwest::Client, url: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = fetch(client, url).await;
        if cond(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never became fresh; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_forget_what_the_app_forgot() {
    // The app: pages show a post and how often the handler ran.
    let runs = Runs::new();
    let runs = Arc::new(runs);
    let r = Arc::clone(&runs);
    let app = Router::new()
        .route(
            "/{section}/posts/{id}",
            get(move |UrlPath((section, id)): UrlPath<(String, i64)>| {
                let r = Arc::clone(&r);
                async move {
                    let post = load(id);
                    r.hit();
                    format!("{section} post {} run {}", post.id, r.get())
                }
            }),
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

    let Some((_by_url, url_port)) = start_varnish(app_port, "varnish-url") else {
        return skip("varnishd (apt-get install varnish) is not available");
    };
    let Some((_by_key, key_port)) = start_varnish(app_port, "varnish-xkey") else {
        return skip("varnishd with vmod xkey (apt-get install varnish-modules) is not available");
    };
    let Some((_nginx, nginx_port)) = start_nginx(app_port) else {
        return skip(
            "nginx with the cache-purge module (libnginx-mod-http-cache-purge) is not available",
        );
    };
    let dead = free_port(); // nothing listens here: a proxy that is down
    purge::install(
        vec![
            Arc::new(VarnishPurger::new(
                format!("http://127.0.0.1:{url_port}"),
                VarnishMode::Url,
            )),
            Arc::new(VarnishPurger::new(
                format!("http://127.0.0.1:{key_port}"),
                VarnishMode::Xkey,
            )),
            Arc::new(NginxPurger::new(format!("http://127.0.0.1:{nginx_port}"))),
            Arc::new(NginxPurger::new(format!("http://127.0.0.1:{dead}"))),
        ],
        PurgeOptions::default()
            .retries(1, Duration::from_millis(10))
            .hold(Duration::from_millis(50)),
    )
    .expect("installed once");

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let proxies = [("url", url_port), ("xkey", key_port), ("nginx", nginx_port)];
    // Warm: post 1 and post 2 through each proxy; the second request is the
    // proxy's hit and does not reach the app.
    let mut warm = std::collections::HashMap::new();
    for (section, port) in proxies {
        for id in [1, 2] {
            let url = format!("http://127.0.0.1:{port}/{section}/posts/{id}");
            let (proxy, first) = fetch(&client, &url).await;
            assert_eq!(proxy, "MISS", "{url}");
            let before = runs.get();
            let (proxy, second) = fetch(&client, &url).await;
            assert_eq!(proxy, "HIT", "{url} is served by the proxy");
            assert_eq!(second, first);
            assert_eq!(runs.get(), before, "the app did not run");
            if id == 1 {
                warm.insert(section, first);
            }
        }
    }
    assert_eq!(runs.get(), 6);

    // Writing post 1: every proxy drops its page of post 1, by URL or by key.
    invalidate(&load(1));
    for (section, port) in proxies {
        let url = format!("http://127.0.0.1:{port}/{section}/posts/1");
        let old = &warm[section];
        let fresh = fetch_until(&client, &url, |body| body != old).await;
        assert!(
            fresh.starts_with(&format!("{section} post 1 run")),
            "{fresh}"
        );
        let (proxy, again) = fetch(&client, &url).await;
        assert_eq!(
            (proxy.as_str(), again.as_str()),
            ("HIT", fresh.as_str()),
            "cached again"
        );
        let (proxy, _) = fetch(
            &client,
            &format!("http://127.0.0.1:{port}/{section}/posts/2"),
        )
        .await;
        assert_eq!(
            proxy, "HIT",
            "{section}: the page of post 2 stays in the proxy"
        );
    }
    assert_eq!(
        runs.get(),
        6 + 3,
        "each proxy fetched post 1 once more, nothing else"
    );

    // The proxy that is down: the write succeeded, its purges failed and were counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while purge::stats().failed == 0 {
        assert!(
            Instant::now() < deadline,
            "the dead proxy's failures are counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(purge::stats().retried >= 1);
}
