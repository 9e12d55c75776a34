//! Whole-response caching, tested over real HTTP: an axum server on a free
//! loopback port, a reqwest client. One test per rule.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use reqwest::header::{
    AGE, AUTHORIZATION, CACHE_CONTROL, COOKIE, ETAG, EXPIRES, IF_NONE_MATCH, SET_COOKIE, VARY,
};
use tokio::sync::Notify;
use ultracache::http::{find_urls, purge_urls, route_stats, url_stats, CacheLayer, ClientCaching};
use ultracache::{invalidate, tracks, DependentPaths, Trackable};

/// Serves `app` on a free loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// How often a handler ran.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

impl Runs {
    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn x_cache(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned()
}

async fn get_text(c: &reqwest::Client, url: &str) -> (String, String) {
    let r = c.get(url).send().await.unwrap();
    let cache = x_cache(&r);
    (cache, r.text().await.unwrap())
}

fn counting(runs: &Runs) -> axum::routing::MethodRouter {
    let runs = runs.clone();
    get(move || {
        let runs = runs.clone();
        async move { format!("run {}", runs.next()) }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_does_not_run_the_handler() {
    let runs = Runs::default();
    let app = Router::new()
        .route("/hit/page", counting(&runs))
        .layer(CacheLayer::new(Duration::from_secs(60)));
    let base = serve(app).await;
    let c = client();
    let first = c.get(format!("{base}/hit/page")).send().await.unwrap();
    assert_eq!(x_cache(&first), "MISS");
    assert!(first.headers().get(AGE).is_none());
    assert_eq!(first.text().await.unwrap(), "run 1");
    let second = c.get(format!("{base}/hit/page")).send().await.unwrap();
    assert_eq!(x_cache(&second), "HIT");
    assert!(second.headers().get(AGE).is_some());
    assert_eq!(second.text().await.unwrap(), "run 1");
    assert_eq!(runs.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_and_head_use_the_cache_and_head_shares_the_get_entry() {
    let runs = Runs::default();
    let r = runs.clone();
    let app = Router::new()
        .route(
            "/methods/page",
            counting(&runs).post(move || {
                let r = r.clone();
                async move { format!("posted {}", r.next()) }
            }),
        )
        .layer(CacheLayer::new(Duration::from_secs(60)));
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/methods/page");

    // HEAD first: fills the GET entry.
    let head = c.head(&url).send().await.unwrap();
    assert_eq!(x_cache(&head), "MISS");
    assert_eq!(head.text().await.unwrap(), "");
    assert_eq!(get_text(&c, &url).await, ("HIT".into(), "run 1".into()));
    let head = c.head(&url).send().await.unwrap();
    assert_eq!(x_cache(&head), "HIT");

    // POSTs always run and are never served to a GET; a POST that
    // succeeded changed the page, so the GET is computed again (RFC 9111 §4.4).
    let p1 = c.post(&url).send().await.unwrap().text().await.unwrap();
    let p2 = c.post(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!((p1.as_str(), p2.as_str()), ("posted 2", "posted 3"));
    assert_eq!(get_text(&c, &url).await, ("MISS".into(), "run 4".into()));
    assert_eq!(get_text(&c, &url).await, ("HIT".into(), "run 4".into()));
}

async fn header_route(headers: HeaderMap, runs: Runs) -> Response {
    (headers, format!("run {}", runs.next())).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_must_not_be_stored_are_not() {
    let cases: Vec<(&str, &str, &str)> = vec![
        ("set-cookie", "set-cookie", "a=b"),
        ("private", "cache-control", "private"),
        ("no-store", "cache-control", "no-store"),
        ("no-cache", "cache-control", "no-cache"),
        ("max-age-0", "cache-control", "max-age=0"),
        ("expired", "expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ];
    let mut app = Router::new();
    let mut all = Vec::new();
    for (path, name, value) in &cases {
        let runs = Runs::default();
        all.push((path.to_string(), runs.clone()));
        let mut headers = HeaderMap::new();
        headers.insert(*name, HeaderValue::from_static(value));
        app = app.route(
            &format!("/never/{path}"),
            get(move || header_route(headers.clone(), runs.clone())),
        );
    }
    let base = serve(app.layer(CacheLayer::new(Duration::from_secs(60)))).await;
    let c = client();
    for (path, runs) in &all {
        let url = format!("{base}/never/{path}");
        let first = c.get(&url).send().await.unwrap();
        if path == "set-cookie" {
            assert!(first.headers().get(SET_COOKIE).is_some());
        }
        assert_eq!(
            get_text(&c, &url).await,
            ("MISS".into(), "run 2".into()),
            "{path}"
        );
        assert_eq!(runs.get(), 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_stream_through_unstored() {
    let runs = Runs::default();
    let r = runs.clone();
    let app = Router::new()
        .route(
            "/big/page",
            get(move || {
                let n = r.next();
                async move {
                    // No Content-Length: a stream of 8 chunks of 1 KiB.
                    let chunks = (0..8).map(move |i| {
                        Ok::<_, std::io::Error>(format!("{:1024}", format!("{n}-{i}")))
                    });
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                }
            }),
        )
        .layer(CacheLayer::new(Duration::from_secs(60)).max_body_size(3000));
    let base = serve(app).await;
    let c = client();
    let (cache, body) = get_text(&c, &format!("{base}/big/page")).await;
    assert_eq!((cache.as_str(), body.len()), ("MISS", 8 * 1024));
    assert!(body.starts_with("1-0"));
    let (cache, body) = get_text(&c, &format!("{base}/big/page")).await;
    assert_eq!((cache.as_str(), body.len()), ("MISS", 8 * 1024));
    assert_eq!(runs.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_bypasses_unless_allowed_and_then_each_credential_has_its_own_entry() {
    let runs = Runs::default();
    let echo = |runs: Runs| {
        get(move |headers: HeaderMap| {
            let runs = runs.clone();
            async move {
                let who = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("nobody")
                    .to_owned();
                format!("{who} {}", runs.next())
            }
        })
    };
    let allowed = Runs::default();
    let app = Router::new()
        .route(
            "/auth/closed",
            echo(runs.clone()).layer(CacheLayer::new(Duration::from_secs(60))),
        )
        .route(
            "/auth/open",
            echo(allowed.clone())
                .layer(CacheLayer::new(Duration::from_secs(60)).allow_authorized()),
        );
    let base = serve(app).await;
    let c = client();
    let closed = format!("{base}/auth/closed");
    for _ in 0..2 {
        let r = c
            .get(&closed)
            .header(AUTHORIZATION, "Bearer a")
            .send()
            .await
            .unwrap();
        assert_eq!(x_cache(&r), "MISS");
    }
    assert_eq!(
        runs.get(),
        2,
        "requests with Authorization are not answered from the cache"
    );
    // ...nor stored: an anonymous request afterwards misses.
    assert_eq!(get_text(&c, &closed).await.0, "MISS");

    let open = format!("{base}/auth/open");
    let send = |who: &'static str| c.get(&open).header(AUTHORIZATION, who).send();
    assert_eq!(
        send("Bearer a").await.unwrap().text().await.unwrap(),
        "Bearer a 1"
    );
    assert_eq!(
        send("Bearer b").await.unwrap().text().await.unwrap(),
        "Bearer b 2"
    );
    let again = send("Bearer a").await.unwrap();
    assert_eq!(x_cache(&again), "HIT");
    assert_eq!(
        again.text().await.unwrap(),
        "Bearer a 1",
        "user b never sees a's page"
    );
}

async fn greet(headers: HeaderMap, runs: Runs, private: bool) -> Response {
    let user = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("user="))
        .unwrap_or("anonymous")
        .to_owned();
    let n = runs.next();
    let mut response = format!("hello {user} {n}").into_response();
    if private {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_page_of_user_a_is_never_served_to_user_b() {
    let (private, session, vary) = (Runs::default(), Runs::default(), Runs::default());
    let p = private.clone();
    let s = session.clone();
    let v = vary.clone();
    let app = Router::new()
        // The page says it is private.
        .route(
            "/private/marked",
            get(move |h: HeaderMap| greet(h, p.clone(), true))
                .layer(CacheLayer::new(Duration::from_secs(60))),
        )
        // The site caches anonymous visitors only.
        .route(
            "/private/session",
            get(move |h: HeaderMap| greet(h, s.clone(), false))
                .layer(CacheLayer::new(Duration::from_secs(60)).anonymous_only("user")),
        )
        // The layer keeps one entry per user.
        .route(
            "/private/per-user",
            get(move |h: HeaderMap| greet(h, v.clone(), false))
                .layer(CacheLayer::new(Duration::from_secs(60)).vary_cookie("user")),
        );
    let base = serve(app).await;
    let c = client();
    for path in ["marked", "session", "per-user"] {
        let url = format!("{base}/private/{path}");
        let a = c
            .get(&url)
            .header(COOKIE, "user=alice")
            .send()
            .await
            .unwrap();
        assert_eq!(a.text().await.unwrap(), "hello alice 1", "{path}");
        let b = c.get(&url).header(COOKIE, "user=bob").send().await.unwrap();
        assert_eq!(b.text().await.unwrap(), "hello bob 2", "{path}");
    }
    // Anonymous visitors of the session route are cached.
    let url = format!("{base}/private/session");
    assert_eq!(
        get_text(&c, &url).await,
        ("MISS".into(), "hello anonymous 3".into())
    );
    assert_eq!(
        get_text(&c, &url).await,
        ("HIT".into(), "hello anonymous 3".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_vary_header_keeps_one_entry_per_variant() {
    let runs = Runs::default();
    let r = runs.clone();
    let app = Router::new()
        .route(
            "/vary/page",
            get(move |headers: HeaderMap| {
                let r = r.clone();
                async move {
                    let lang = headers
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("en")
                        .to_owned();
                    let mut response = format!("{lang} {}", r.next()).into_response();
                    response
                        .headers_mut()
                        .insert(VARY, HeaderValue::from_static("Accept-Language"));
                    response
                }
            }),
        )
        .layer(CacheLayer::new(Duration::from_secs(60)));
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/vary/page");
    let lang = |l: &'static str| c.get(&url).header("accept-language", l).send();
    let fr = lang("fr").await.unwrap();
    assert_eq!(
        (x_cache(&fr), fr.text().await.unwrap()),
        ("MISS".into(), "fr 1".into())
    );
    let de = lang("de").await.unwrap();
    assert_eq!(
        (x_cache(&de), de.text().await.unwrap()),
        ("MISS".into(), "de 2".into())
    );
    let fr = lang("fr").await.unwrap();
    assert_eq!(
        (x_cache(&fr), fr.text().await.unwrap()),
        ("HIT".into(), "fr 1".into())
    );
    let de = lang("de").await.unwrap();
    assert_eq!(
        (x_cache(&de), de.text().await.unwrap()),
        ("HIT".into(), "de 2".into())
    );
    assert_eq!(
        find_urls(&["/vary/page"]).len(),
        2,
        "two variants of one URL"
    );

    // Purging the URL drops every variant.
    purge_urls(&["/vary/page"]);
    assert_eq!(lang("fr").await.unwrap().text().await.unwrap(), "fr 3");
    assert_eq!(lang("de").await.unwrap().text().await.unwrap(), "de 4");
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "http.post")]
struct Post {
    id: i64,
    title: String,
}

#[tracks]
fn load_post(id: i64) -> Post {
    Post {
        id,
        title: format!("post {id}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_what_a_page_read_drops_every_variant_of_it_and_only_it() {
    let runs = Runs::default();
    let r = runs.clone();
    let app = Router::new()
        .route(
            "/deps/posts/{id}",
            get(move |Path(id): Path<i64>, headers: HeaderMap| {
                let r = r.clone();
                async move {
                    let lang = headers
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("en")
                        .to_owned();
                    tokio::task::yield_now().await;
                    let post = load_post(id);
                    let mut response =
                        format!("{lang} {} {}", post.title, r.next()).into_response();
                    response
                        .headers_mut()
                        .insert(VARY, HeaderValue::from_static("accept-language"));
                    response
                }
            }),
        )
        .layer(CacheLayer::new(Duration::from_secs(3600)));
    let base = serve(app).await;
    let c = client();
    let page = |id: i64, lang: &'static str| {
        c.get(format!("{base}/deps/posts/{id}"))
            .header("accept-language", lang)
            .send()
    };
    for (id, lang) in [(1, "en"), (1, "fr"), (2, "en")] {
        assert_eq!(x_cache(&page(id, lang).await.unwrap()), "MISS");
        assert_eq!(x_cache(&page(id, lang).await.unwrap()), "HIT");
    }
    invalidate(&load_post(1));
    assert_eq!(x_cache(&page(1, "en").await.unwrap()), "MISS");
    assert_eq!(x_cache(&page(1, "fr").await.unwrap()), "MISS");
    assert_eq!(
        x_cache(&page(2, "en").await.unwrap()),
        "HIT",
        "post 2's page did not read post 1"
    );
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "http.setting")]
struct Setting {
    id: u32,
}

impl DependentPaths for Setting {
    fn dependent_paths(&self) -> Vec<String> {
        vec!["/paths/about".into(), "/paths/contact".into()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependent_paths_drop_pages_that_never_read_the_object() {
    let runs = Runs::default();
    let app = Router::new()
        .route("/paths/about", counting(&runs))
        .route("/paths/contact", counting(&runs))
        .route("/paths/other", counting(&runs))
        .layer(CacheLayer::new(Duration::from_secs(3600)));
    let base = serve(app).await;
    let c = client();
    for p in ["about", "contact", "other"] {
        get_text(&c, &format!("{base}/paths/{p}")).await;
    }
    invalidate(&Setting { id: 1 });
    assert_eq!(get_text(&c, &format!("{base}/paths/about")).await.0, "MISS");
    assert_eq!(
        get_text(&c, &format!("{base}/paths/contact")).await.0,
        "MISS"
    );
    assert_eq!(get_text(&c, &format!("{base}/paths/other")).await.0, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_are_answered_304_from_the_cache() {
    let runs = Runs::default();
    let app = Router::new()
        .route("/etag/page", counting(&runs))
        .layer(CacheLayer::new(Duration::from_secs(60)));
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/etag/page");
    let first = c.get(&url).send().await.unwrap();
    let etag = first
        .headers()
        .get(ETAG)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let revalidate = c
        .get(&url)
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidate.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(x_cache(&revalidate), "HIT");
    assert_eq!(
        revalidate.headers().get(ETAG).unwrap().to_str().unwrap(),
        etag
    );
    assert_eq!(revalidate.text().await.unwrap(), "");
    let other = c
        .get(&url)
        .header(IF_NONE_MATCH, "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(runs.get(), 1);
}

fn header(r: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_told_what_the_layer_says_not_how_long_the_server_keeps_pages() {
    let runs = Runs::default();
    let week = Duration::from_secs(7 * 24 * 3600);
    let app = Router::new()
        .route(
            "/client/default",
            counting(&runs).layer(CacheLayer::new(week)),
        )
        .route(
            "/client/timeout",
            counting(&runs).layer(
                CacheLayer::new(Duration::from_secs(120))
                    .client_caching(ClientCaching::FromTimeout),
            ),
        )
        .route(
            "/client/forever",
            counting(&runs).layer(CacheLayer::forever().client_caching(ClientCaching::FromTimeout)),
        )
        .route(
            "/client/zero",
            counting(&runs).layer(CacheLayer::new(Duration::ZERO)),
        )
        .route(
            "/client/proxy",
            counting(&runs).layer(CacheLayer::new(week).shared_max_age(Duration::from_secs(600))),
        );
    let base = serve(app).await;
    let c = client();
    let fetch = |p: &str| c.get(format!("{base}/client/{p}")).send();

    let r = fetch("default").await.unwrap();
    assert_eq!(
        header(&r, CACHE_CONTROL).as_deref(),
        Some("max-age=0, must-revalidate")
    );
    assert!(header(&r, ETAG).is_some());

    let r = fetch("timeout").await.unwrap();
    assert_eq!(header(&r, CACHE_CONTROL).as_deref(), Some("max-age=120"));
    assert!(header(&r, EXPIRES).is_some());

    let r = fetch("forever").await.unwrap();
    assert_eq!(header(&r, CACHE_CONTROL), None);
    assert!(header(&r, EXPIRES).is_some(), "forever: Expires only");

    let r = fetch("zero").await.unwrap();
    assert_eq!(
        header(&r, CACHE_CONTROL).as_deref(),
        Some("no-cache, no-store, must-revalidate, max-age=0")
    );
    let again = fetch("zero").await.unwrap();
    assert_eq!(x_cache(&again), "MISS", "a timeout of 0 stores nothing");

    let r = fetch("proxy").await.unwrap();
    assert_eq!(
        header(&r, CACHE_CONTROL).as_deref(),
        Some("max-age=0, must-revalidate, s-maxage=600")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_make_pages_unless_the_allow_list_says_otherwise() {
    let (all, allowed) = (Runs::default(), Runs::default());
    let echo = |runs: Runs| {
        get(move |uri: axum::http::Uri| {
            let runs = runs.clone();
            async move { format!("{} {}", uri.query().unwrap_or(""), runs.next()) }
        })
    };
    let app = Router::new()
        .route(
            "/query/all",
            echo(all.clone()).layer(CacheLayer::new(Duration::from_secs(60))),
        )
        .route(
            "/query/allowed",
            echo(allowed.clone())
                .layer(CacheLayer::new(Duration::from_secs(60)).query_allow(["page"])),
        );
    let base = serve(app).await;
    let c = client();
    let fetch = |q: &str| {
        let url = format!("{base}/query/all?{q}");
        let c = c.clone();
        async move { get_text(&c, &url).await }
    };
    assert_eq!(fetch("page=2").await.0, "MISS");
    assert_eq!(fetch("page=3").await.0, "MISS");
    assert_eq!(fetch("page=2").await.0, "HIT");
    assert_eq!(fetch("a=1&b=2").await.0, "MISS");
    assert_eq!(fetch("b=2&a=1").await.0, "HIT", "order does not matter");

    let fetch = |q: &str| {
        let url = format!("{base}/query/allowed?{q}");
        let c = c.clone();
        async move { get_text(&c, &url).await }
    };
    assert_eq!(fetch("page=2").await.0, "MISS");
    assert_eq!(fetch("page=2&junk=1").await.0, "HIT");
    assert_eq!(fetch("junk=2&page=2").await.0, "HIT");
    assert_eq!(fetch("page=3").await.0, "MISS");
    assert_eq!(allowed.get(), 2);

    let stats = url_stats();
    let page2 = stats
        .iter()
        .find(|s| s.name == "/query/allowed?page=2")
        .unwrap();
    assert_eq!((page2.hits, page2.misses), (2, 1));
    assert!(!stats.iter().any(|s| s.name.contains("junk")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_not_cached_unless_configured() {
    let (default, configured) = (Runs::default(), Runs::default());
    let missing = |runs: Runs| {
        get(move || {
            let runs = runs.clone();
            async move { (StatusCode::NOT_FOUND, format!("gone {}", runs.next())) }
        })
    };
    let app = Router::new()
        .route(
            "/status/default",
            missing(default.clone()).layer(CacheLayer::new(Duration::from_secs(60))),
        )
        .route(
            "/status/configured",
            missing(configured.clone()).layer(
                CacheLayer::new(Duration::from_secs(60)).statuses([200, 203, 300, 301, 404, 410]),
            ),
        );
    let base = serve(app).await;
    let c = client();
    for _ in 0..2 {
        let r = c
            .get(format!("{base}/status/default"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c
            .get(format!("{base}/status/configured"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!((default.get(), configured.get()), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_before_store_run_once_and_on_serve_runs_for_every_response() {
    let runs = Runs::default();
    let processed = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (p, s) = (processed.clone(), served.clone());
    let app = Router::new()
        .route("/hooks/page", counting(&runs))
        .route(
            "/hooks/missing",
            get(|| async { (StatusCode::NOT_FOUND, "nope") }),
        )
        .layer(
            CacheLayer::new(Duration::from_secs(60))
                .before_store(move |response| {
                    p.fetch_add(1, Ordering::SeqCst);
                    response.map(|body| {
                        let mut b = body.to_vec();
                        b.extend_from_slice(b" (processed)");
                        b.into()
                    })
                })
                .on_serve(move |response| {
                    let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                    response
                        .headers_mut()
                        .insert("x-served", HeaderValue::from(n as u64));
                }),
        );
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/hooks/page");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = c.get(&url).send().await.unwrap();
        seen.push(header(&r, "x-served".parse().unwrap()));
        assert_eq!(r.text().await.unwrap(), "run 1 (processed)");
    }
    assert_eq!(seen, [Some("1".into()), Some("2".into()), Some("3".into())]);
    assert_eq!(
        processed.load(Ordering::SeqCst),
        1,
        "processed once, before storing"
    );
    let r = c.get(format!("{base}/hooks/missing")).send().await.unwrap();
    assert_eq!(
        header(&r, "x-served".parse().unwrap()).as_deref(),
        Some("4"),
        "every status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_exactly_once() {
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let (r, g) = (runs.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/swr/page",
            get(move || {
                let (r, g) = (r.clone(), g.clone());
                async move {
                    let n = r.next();
                    if n > 1 {
                        // The refresh waits until every stale request was answered.
                        g.notified().await;
                    }
                    format!("version {n}")
                }
            }),
        )
        .layer(
            CacheLayer::new(Duration::from_secs(1))
                .stale_while_revalidate(Duration::from_secs(600)),
        );
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/swr/page");
    assert_eq!(
        get_text(&c, &url).await,
        ("MISS".into(), "version 1".into())
    );
    assert_eq!(get_text(&c, &url).await, ("HIT".into(), "version 1".into()));
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the fresh period
    for _ in 0..5 {
        assert_eq!(
            get_text(&c, &url).await,
            ("STALE".into(), "version 1".into())
        );
    }
    assert_eq!(runs.get(), 2, "one refresh started for five stale requests");
    gate.notify_one();
    // Wait for the refresh to land (bounded), then it is served fresh.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (cache, body) = get_text(&c, &url).await;
        if body == "version 2" {
            assert_eq!(cache, "HIT");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refresh never landed"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(runs.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_on_one_url_run_the_handler_once() {
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let (r, g) = (runs.clone(), gate.clone());
    let app = Router::new()
        .route(
            "/flight/page",
            get(move || {
                let (r, g) = (r.clone(), g.clone());
                async move {
                    let n = r.next();
                    g.notified().await;
                    format!("run {n}")
                }
            }),
        )
        .layer(CacheLayer::new(Duration::from_secs(60)).name("flight"));
    let base = serve(app).await;
    let c = client();
    let url = format!("{base}/flight/page");
    let requests: Vec<_> = (0..6)
        .map(|_| tokio::spawn(c.get(url.clone()).send()))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ultracache::stats()
        .cache("flight")
        .map_or(0, |s| s.coalesced)
        < 5
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never coalesced"
        );
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    for r in requests {
        assert_eq!(r.await.unwrap().unwrap().text().await.unwrap(), "run 1");
    }
    assert_eq!(runs.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_found_and_purged_by_pattern_and_a_purge_beats_a_first_fill() {
    let runs = Runs::default();
    let gate = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let (r, g, st) = (runs.clone(), gate.clone(), started.clone());
    let app = Router::new()
        .route("/find/a", counting(&runs))
        .route("/find/b", counting(&runs))
        .route("/find/b/deeper", counting(&runs))
        .route(
            "/find/slow",
            get(move || {
                let (r, g, st) = (r.clone(), g.clone(), st.clone());
                async move {
                    let n = r.next();
                    st.notify_one();
                    g.notified().await;
                    format!("slow {n}")
                }
            }),
        )
        .layer(CacheLayer::new(Duration::from_secs(60)).name("find"));
    let base = serve(app).await;
    let c = client();
    for p in ["a", "b", "b/deeper"] {
        get_text(&c, &format!("{base}/find/{p}")).await;
    }
    let found: Vec<String> = find_urls(&["/find/*"]).into_iter().map(|u| u.url).collect();
    assert_eq!(found, ["/find/a", "/find/b", "/find/b/deeper"]);
    let exact: Vec<String> = find_urls(&["/find/b"]).into_iter().map(|u| u.url).collect();
    assert_eq!(exact, ["/find/b"]);
    let info = &find_urls(&["/find/a"])[0];
    assert!(info
        .expires_in
        .is_some_and(|d| d <= Duration::from_secs(60)));
    assert_eq!(info.route.as_deref(), Some("/find/a"));

    let purged = purge_urls(&["/find/b*"]);
    assert_eq!(purged.len(), 2);
    assert_eq!(get_text(&c, &format!("{base}/find/a")).await.0, "HIT");
    assert_eq!(get_text(&c, &format!("{base}/find/b")).await.0, "MISS");

    // A purge while the first fill of a page runs: that fill is not stored.
    let slow = format!("{base}/find/slow");
    let first = tokio::spawn(c.get(slow.clone()).send());
    started.notified().await;
    purge_urls(&["/find/slow"]);
    gate.notify_one();
    // (runs: a, b, b/deeper, then b again after its purge, then this fill)
    assert_eq!(
        first.await.unwrap().unwrap().text().await.unwrap(),
        "slow 5"
    );
    let again = tokio::spawn(c.get(slow.clone()).send());
    started.notified().await;
    gate.notify_one();
    let again = again.await.unwrap().unwrap();
    assert_eq!(x_cache(&again), "MISS");
    assert_eq!(again.text().await.unwrap(), "slow 6");

    let routes = route_stats();
    let a = routes.iter().find(|s| s.name == "/find/a").unwrap();
    assert_eq!((a.hits, a.misses), (1, 1));
    // Counts go on across a purge.
    let b = url_stats()
        .into_iter()
        .find(|s| s.name == "/find/b")
        .unwrap();
    assert_eq!((b.hits, b.misses), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_urls_are_neither_reported_nor_kept() {
    let runs = Runs::default();
    let app = Router::new()
        .route("/expired/page", counting(&runs))
        .layer(CacheLayer::new(Duration::from_millis(100)).name("expired"));
    let base = serve(app).await;
    let c = client();
    get_text(&c, &format!("{base}/expired/page")).await;
    assert_eq!(find_urls(&["/expired/*"]).len(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await; // past the timeout
    assert!(find_urls(&["/expired/*"]).is_empty());
    assert_eq!(
        ultracache::stats().cache("expired").map(|s| s.entries),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_paths_and_key_prefixes_that_say_no_are_not_cached() {
    let runs = Runs::default();
    let app = Router::new()
        .route("/ignore/admin/x", counting(&runs))
        .route("/ignore/public", counting(&runs))
        .route("/ignore/nocache", counting(&runs))
        .layer(
            CacheLayer::new(Duration::from_secs(60))
                .ignore_paths(["/ignore/admin/*"])
                .key_prefix(|parts| {
                    (parts.uri.path() != "/ignore/nocache").then(|| "v1:".to_owned())
                }),
        );
    let base = serve(app).await;
    let c = client();
    for p in ["admin/x", "public", "nocache"] {
        get_text(&c, &format!("{base}/ignore/{p}")).await;
    }
    assert_eq!(
        get_text(&c, &format!("{base}/ignore/admin/x")).await.0,
        "MISS"
    );
    assert_eq!(
        get_text(&c, &format!("{base}/ignore/nocache")).await.0,
        "MISS"
    );
    assert_eq!(
        get_text(&c, &format!("{base}/ignore/public")).await.0,
        "HIT"
    );
    let keys: Vec<String> = find_urls(&["/ignore/*"])
        .into_iter()
        .map(|u| u.key)
        .collect();
    // The prefix, then the host the request was for, a line break, the URL.
    let host = base.trim_start_matches("http://");
    assert_eq!(keys, [format!("v1:{host}\n/ignore/public")]);
}
