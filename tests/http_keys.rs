//! Cache keys an attacker cannot steer: every input the handler reads is in
//! the key, in the form the handler reads it. Each test is named for the
//! poisoning or leak it stops; each sends the attacker's request first and
//! then checks what the victim gets.

mod common;

use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use axum::Router;
use common::web::{client, fetch, serve};
use ultracache::http::{purge_urls, CacheLayer};

fn layer(name: &str) -> CacheLayer {
    CacheLayer::new(Duration::from_secs(3600)).name(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_built_for_another_host_is_not_served_to_this_one() {
    let app = Router::new()
        .route(
            "/host",
            get(|headers: HeaderMap| async move {
                format!("links to {}", headers["host"].to_str().unwrap())
            }),
        )
        .layer(layer("keys.host"));
    let base = serve(app).await;
    let c = client();
    let (_, poisoned) = fetch(&c, &format!("{base}/host"), &[("host", "evil.example")]).await;
    assert_eq!(poisoned, "links to evil.example");
    let (_, page) = fetch(&c, &format!("{base}/host"), &[("host", "www.example")]).await;
    assert_eq!(page, "links to www.example");
    let (hit, page) = fetch(&c, &format!("{base}/host"), &[("host", "WWW.example")]).await;
    assert_eq!(
        (hit.as_str(), page.as_str()),
        ("HIT", "links to www.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_parameter_name_cannot_poison_the_page_without_it() {
    let app = Router::new()
        .route(
            "/list",
            get(|Query(q): Query<Vec<(String, String)>>| async move {
                let page = q.iter().find(|(k, _)| k == "page").map(|(_, v)| v.clone());
                format!("page {}", page.unwrap_or_else(|| "1".into()))
            }),
        )
        .layer(layer("keys.query").query_allow(["page"]));
    let base = serve(app).await;
    let c = client();
    let (_, attack) = fetch(&c, &format!("{base}/list?p%61ge=666"), &[]).await;
    assert_eq!(attack, "page 666");
    assert_eq!(fetch(&c, &format!("{base}/list"), &[]).await.1, "page 1");
    assert_eq!(
        fetch(&c, &format!("{base}/list?page=2"), &[]).await.1,
        "page 2"
    );
    // The same page spelled another way is the same entry.
    let (hit, page) = fetch(&c, &format!("{base}/list?p%61ge=2&utm=x"), &[]).await;
    assert_eq!((hit.as_str(), page.as_str()), ("HIT", "page 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_parameters_in_another_order_are_another_page() {
    let app = Router::new()
        .route(
            "/tags",
            get(|Query(q): Query<Vec<(String, String)>>| async move {
                q.iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        )
        .layer(layer("keys.repeated"));
    let base = serve(app).await;
    let c = client();
    assert_eq!(
        fetch(&c, &format!("{base}/tags?a=1&a=2"), &[]).await.1,
        "1,2"
    );
    assert_eq!(
        fetch(&c, &format!("{base}/tags?a=2&a=1"), &[]).await.1,
        "2,1"
    );
}

/// A handler behind a router that decodes paths before matching them (as
/// many do): `/%61ccount` is the account page.
async fn decoding_router(uri: Uri, headers: HeaderMap) -> String {
    let path = percent_decode(uri.path());
    if path == "/account" {
        let who = headers
            .get("cookie")
            .map(|c| c.to_str().unwrap().to_owned())
            .unwrap_or_default();
        format!("account of {who}")
    } else {
        format!("public {path}")
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_path_cannot_slip_past_ignore_paths() {
    let app = Router::new().fallback(decoding_router).layer(
        layer("keys.deception")
            .ignore_paths(["/account"])
            .cache_requests_with_cookies(),
    );
    let base = serve(app).await;
    let c = client();
    // The victim is lured to /%61ccount with their session.
    let (_, victim) = fetch(
        &c,
        &format!("{base}/%61ccount"),
        &[("cookie", "sid=victim")],
    )
    .await;
    assert_eq!(victim, "account of sid=victim");
    // The attacker asks for the same URL without any session.
    let (cache, page) = fetch(&c, &format!("{base}/%61ccount"), &[]).await;
    assert_ne!(cache, "HIT", "the victim's account page was cached: {page}");
    assert_eq!(page, "account of ");
}

/// Reads cookie `name` as axum-extra's `CookieJar` does.
fn jar_cookie(headers: &HeaderMap, name: &str) -> String {
    jar_cookie_opt(headers, name).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_spelled_oddly_is_keyed_as_the_handler_reads_it() {
    let app = Router::new()
        .route(
            "/hello",
            get(|headers: HeaderMap| async move {
                format!("hello in {}", jar_cookie(&headers, "lang"))
            }),
        )
        .layer(layer("keys.cookie").vary_cookie("lang"));
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/hello");
    assert_eq!(
        fetch(&c, &url, &[("cookie", "lang =evil")]).await.1,
        "hello in evil"
    );
    assert_eq!(
        fetch(&c, &url, &[]).await.1,
        "hello in ",
        "poisoned for visitors without lang"
    );
    assert_eq!(
        fetch(&c, &url, &[("cookie", "lang=fr; lang=evil")]).await.1,
        "hello in evil"
    );
    assert_eq!(
        fetch(&c, &url, &[("cookie", "lang=fr")]).await.1,
        "hello in fr",
        "poisoned for French visitors"
    );
    assert_eq!(
        fetch(&c, &url, &[("cookie", "lang=f%72")]).await,
        ("HIT".to_owned(), "hello in fr".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_path_purges_every_spelling_of_it() {
    let app = Router::new()
        .route(
            "/x/{name}",
            get(|Path(name): Path<String>| async move { format!("hi {name}") }),
        )
        .layer(layer("keys.purge"));
    let base = serve(app).await;
    let c = client();
    assert_eq!(
        fetch(&c, &format!("{base}/x/hell%6F"), &[]).await.1,
        "hi hello"
    );
    assert_eq!(fetch(&c, &format!("{base}/x/hello"), &[]).await.0, "HIT");
    purge_urls(&["/x/hello"]);
    assert_eq!(fetch(&c, &format!("{base}/x/hell%6F"), &[]).await.0, "MISS");
    purge_urls(&["/x/hell%6F"]);
    assert_eq!(fetch(&c, &format!("{base}/x/hello"), &[]).await.0, "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_personalised_on_a_cookie_is_not_served_to_the_next_visitor() {
    let app = Router::new()
        .route(
            "/dashboard",
            get(|headers: HeaderMap| async move {
                format!("dashboard of {}", jar_cookie(&headers, "user"))
            }),
        )
        .layer(layer("keys.personal"));
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/dashboard");
    let (_, alice) = fetch(&c, &url, &[("cookie", "user=alice")]).await;
    assert_eq!(alice, "dashboard of alice");
    assert_eq!(
        fetch(&c, &url, &[("cookie", "user=bob")]).await.1,
        "dashboard of bob"
    );
    assert_eq!(fetch(&c, &url, &[]).await.1, "dashboard of ");
    // Without cookies, the page is cached as usual.
    assert_eq!(fetch(&c, &url, &[]).await.0, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_header_holding_a_path_cannot_poison_that_path() {
    let app = Router::new()
        .route("/", get(|| async { "home" }))
        .route("/admin/", get(|| async { "admin" }))
        .layer(layer("keys.host_path"));
    let base = serve(app).await;
    let c = client();
    // The attacker asks for `/` of the host `www.example/admin`...
    let (_, attack) = fetch(&c, &format!("{base}/"), &[("host", "www.example/admin")]).await;
    assert_eq!(attack, "home");
    // ...which must not be the page of `/admin/` on `www.example`.
    assert_eq!(
        fetch(&c, &format!("{base}/admin/"), &[("host", "www.example")])
            .await
            .1,
        "admin",
        "poisoned through the Host header"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_header_value_holding_a_comma_is_not_two_values() {
    let app = Router::new()
        .route(
            "/tenant",
            get(|headers: HeaderMap| async move {
                // What a handler reading one header sees: the first value,
                // as bytes.
                let first = headers.get("x-tenant").map(|v| v.as_bytes().to_vec());
                format!("tenant {first:?}")
            }),
        )
        .layer(layer("keys.header_values").vary_header("x-tenant".parse().unwrap()));
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/tenant");
    let two = c
        .get(&url)
        .header("x-tenant", "a")
        .header("x-tenant", "b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        two.text().await.unwrap(),
        format!("tenant {:?}", Some(b"a"))
    );
    assert_eq!(
        fetch(&c, &url, &[("x-tenant", "a,b")]).await.1,
        format!("tenant {:?}", Some(b"a,b")),
        "two values and one value with a comma shared a page"
    );
    // Bytes that are not UTF-8 are told apart, not replaced alike.
    for byte in [0xfeu8, 0xff] {
        let r = c
            .get(&url)
            .header(
                "x-tenant",
                axum::http::HeaderValue::from_bytes(&[byte]).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.text().await.unwrap(),
            format!("tenant {:?}", Some([byte])),
            "byte {byte:#x} served another byte's page"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_cookie_is_not_an_absent_one_and_a_value_cannot_spell_another_cookie() {
    let app = Router::new()
        .route(
            "/prefs",
            get(|headers: HeaderMap| async move {
                format!(
                    "a={:?} b={:?}",
                    jar_cookie_opt(&headers, "a"),
                    jar_cookie_opt(&headers, "b")
                )
            }),
        )
        .layer(layer("keys.cookie_lines").vary_cookie("a").vary_cookie("b"));
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/prefs");
    assert_eq!(
        fetch(&c, &url, &[("cookie", "a=")]).await.1,
        r#"a=Some("") b=None"#
    );
    assert_eq!(
        fetch(&c, &url, &[("cookie", "other=1")]).await.1,
        "a=None b=None",
        "an absent cookie got the empty cookie's page"
    );
    // A decoded line break in `a` cannot forge the line of `b`.
    assert_eq!(
        fetch(&c, &url, &[("cookie", "a=1%0Acookie%20b%3D2; b=")])
            .await
            .1,
        "a=Some(\"1\\ncookie b=2\") b=Some(\"\")"
    );
    assert_eq!(
        fetch(&c, &url, &[("cookie", "a=1; b=2%0Acookie%20b%3D")])
            .await
            .1,
        "a=Some(\"1\") b=Some(\"2\\ncookie b=\")",
        "a cookie's value spelled another cookie"
    );
}

/// The cookie `name` as axum-extra's `CookieJar` reads it: `None` when absent.
fn jar_cookie_opt(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for header in headers.get_all("cookie") {
        for part in header.to_str().unwrap_or_default().split(';') {
            if let Ok(c) = cookie::Cookie::parse_encoded(part) {
                if c.name() == name {
                    found = Some(c.value().to_owned());
                }
            }
        }
    }
    found
}
