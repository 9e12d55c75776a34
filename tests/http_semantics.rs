//! What may be stored and how a stored response is served, held to RFC 9111
//! and RFC 9110; each test is named for the leak or the wrong answer it
//! stops.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response};
use axum::routing::get;
use axum::Router;
use common::web::{client, fetch, serve};
use ultracache::http::CacheLayer;

fn layer(name: &str) -> CacheLayer {
    CacheLayer::new(Duration::from_secs(3600)).name(name)
}

fn user(headers: &HeaderMap) -> Option<String> {
    headers
        .get("cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.strip_prefix("user="))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_varying_on_more_than_the_url_learned_is_not_served_to_others() {
    let app = Router::new()
        .route(
            "/dash",
            get(|headers: HeaderMap| async move {
                let lang = headers
                    .get("accept-language")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                match user(&headers) {
                    Some(who) => Response::builder()
                        .header("vary", "Accept-Language, Cookie")
                        .body(Body::from(format!("dashboard of {who}")))
                        .unwrap(),
                    None => Response::builder()
                        .header("vary", "Accept-Language")
                        .body(Body::from(format!("public in {lang}")))
                        .unwrap(),
                }
            }),
        )
        .layer(layer("sem.vary").cache_requests_with_cookies());
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/dash");
    // The URL learns `Vary: Accept-Language` from an anonymous visitor.
    assert_eq!(
        fetch(&c, &url, &[("accept-language", "en")]).await.1,
        "public in en"
    );
    // Alice, in French: her dashboard varies on her cookie too.
    let alice = [("accept-language", "fr"), ("cookie", "user=alice")];
    assert_eq!(fetch(&c, &url, &alice).await.1, "dashboard of alice");
    let bob = [("accept-language", "fr"), ("cookie", "user=bob")];
    assert_eq!(
        fetch(&c, &url, &bob).await.1,
        "dashboard of bob",
        "Alice's page went to Bob"
    );
    assert_eq!(
        fetch(&c, &url, &[("accept-language", "fr")]).await.1,
        "public in fr",
        "Alice's page went to an anonymous visitor"
    );
    // Each still hits its own entry.
    assert_eq!(
        fetch(&c, &url, &alice).await,
        ("HIT".to_owned(), "dashboard of alice".to_owned())
    );
}

/// An app whose one route answers with `header: value` and counts its runs.
async fn answering(
    name: &str,
    header: &'static str,
    value: &'static [u8],
) -> (String, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let app = Router::new()
        .route(
            "/r",
            get(move || {
                let runs = Arc::clone(&counted);
                async move {
                    runs.fetch_add(1, SeqCst);
                    Response::builder()
                        .header(header, HeaderValue::from_bytes(value).unwrap())
                        .body(Body::from("body"))
                        .unwrap()
                }
            }),
        )
        .layer(layer(name));
    (serve(app).await, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vary_list_containing_a_star_is_never_stored() {
    let (base, runs) = answering("sem.star", "vary", b"Accept-Encoding, *").await;
    let c = client();
    fetch(&c, &format!("{base}/r"), &[]).await;
    fetch(&c, &format!("{base}/r"), &[]).await;
    assert_eq!(runs.load(SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_byte_in_cache_control_does_not_hide_private() {
    let (base, runs) = answering("sem.private", "cache-control", b"private, ext=\"caf\xe9\"").await;
    let c = client();
    fetch(&c, &format!("{base}/r"), &[]).await;
    fetch(&c, &format!("{base}/r"), &[]).await;
    assert_eq!(runs.load(SeqCst), 2, "a private response was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_zero_is_not_stored() {
    let (base, runs) = answering("sem.smaxage", "cache-control", b"max-age=60, s-maxage=0").await;
    let c = client();
    fetch(&c, &format!("{base}/r"), &[]).await;
    fetch(&c, &format!("{base}/r"), &[]).await;
    assert_eq!(runs.load(SeqCst), 2, "kept for the full timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answered_from_the_cache_states_the_length_of_the_page() {
    let app = Router::new()
        .route("/page", get(|| async { "x".repeat(32) }))
        .layer(layer("sem.head"));
    let base = serve(app).await;
    let c = client();
    fetch(&c, &format!("{base}/page"), &[]).await;
    let r = c.head(format!("{base}/page")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.headers()["content-length"], "32");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_write_through_the_layer_drops_the_pages_it_changed() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (r1, r2) = (Arc::clone(&runs), Arc::clone(&runs));
    let app = Router::new()
        .route(
            "/items",
            get(move || {
                let runs = Arc::clone(&r1);
                async move { format!("list {}", runs.fetch_add(1, SeqCst)) }
            })
            .post(|body: String| async move {
                if body == "fail" {
                    Response::builder().status(500).body(Body::empty()).unwrap()
                } else {
                    Response::builder()
                        .status(303)
                        .header("location", "/items/7")
                        .body(Body::empty())
                        .unwrap()
                }
            }),
        )
        .route(
            "/items/7",
            get(move || {
                let runs = Arc::clone(&r2);
                async move { format!("item {}", runs.fetch_add(1, SeqCst)) }
            }),
        )
        .layer(layer("sem.unsafe"));
    let base = serve(app).await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/items", "/items/7"] {
        fetch(&c, &format!("{base}{path}"), &[]).await;
        assert_eq!(fetch(&c, &format!("{base}{path}"), &[]).await.0, "HIT");
    }
    // A write that failed changed nothing.
    let r = c
        .post(format!("{base}/items"))
        .body("fail")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(fetch(&c, &format!("{base}/items"), &[]).await.0, "HIT");
    // One that succeeded changed its target and what it points to.
    let r = c
        .post(format!("{base}/items"))
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(fetch(&c, &format!("{base}/items"), &[]).await.0, "MISS");
    assert_eq!(fetch(&c, &format!("{base}/items/7"), &[]).await.0, "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_the_standard_cache_status_field() {
    let app = Router::new()
        .route("/s", get(|| async { "s" }))
        .layer(layer("sem.status"));
    let base = serve(app).await;
    let c = client();
    let first = c.get(format!("{base}/s")).send().await.unwrap();
    assert_eq!(first.headers()["cache-status"], "ultracache; fwd=miss");
    let second = c.get(format!("{base}/s")).send().await.unwrap();
    assert_eq!(second.headers()["cache-status"], "ultracache; hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_urls_and_large_pages_stay_inside_the_stores_byte_bound() {
    // The default store is bounded in bytes; a page weighs its body, its
    // headers and its URL, and the statistics say what is really held.
    let app = Router::new()
        .route("/big/{n}", get(|| async { "b".repeat(60 << 10) }))
        .layer(layer("sem.memory"));
    let base = serve(app).await;
    let c = client();
    let long = "q".repeat(2000);
    for n in 0..200 {
        fetch(&c, &format!("{base}/big/{n}?{long}={n}"), &[]).await;
    }
    ultracache::run_pending_tasks();
    let stats = ultracache::stats();
    let held = stats.cache("sem.memory").unwrap();
    assert!(held.entries > 0);
    assert!(
        held.bytes >= held.entries * (60 << 10),
        "{} bytes reported for {} pages of 60 KiB",
        held.bytes,
        held.entries
    );
    assert!(held.bytes <= ultracache::DEFAULT_MAX_BYTES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_wins_over_a_past_expires() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let app = Router::new()
        .route(
            "/r",
            get(move || {
                let runs = Arc::clone(&counted);
                async move {
                    runs.fetch_add(1, SeqCst);
                    Response::builder()
                        .header("cache-control", "max-age=600")
                        .header("expires", "Thu, 01 Jan 1970 00:00:00 GMT")
                        .body(Body::from("body"))
                        .unwrap()
                }
            }),
        )
        .layer(layer("sem.expires"));
    let base = serve(app).await;
    let c = client();
    fetch(&c, &format!("{base}/r"), &[]).await;
    assert_eq!(fetch(&c, &format!("{base}/r"), &[]).await.0, "HIT");
    assert_eq!(runs.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_the_origin_gave_is_kept() {
    let (base, _) = answering("sem.age", "age", b"100").await;
    let c = client();
    let miss = c.get(format!("{base}/r")).send().await.unwrap();
    let age: u64 = miss.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!((100..110).contains(&age), "age {age}");
    let hit = c.get(format!("{base}/r")).send().await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    let age: u64 = hit.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!((100..110).contains(&age), "age {age}");
}
