//! `CacheLayer::freshness_from_response`: the layer as a shared HTTP cache
//! (RFC 9111) in front of an origin whose headers say what may be kept and
//! for how long. Each test is named for what a demanding user relies on.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use axum::routing::any;
use axum::Router;
use common::web::{client, serve};
use ultracache::http::CacheLayer;

/// An origin that answers with the headers and body the test sets, and
/// remembers every request it got.
#[derive(Clone, Default)]
struct Origin {
    inner: Arc<Mutex<OriginState>>,
}

#[derive(Default)]
struct OriginState {
    headers: Vec<(String, String)>,
    body: String,
    /// Answer `If-None-Match: <this>` with a 304 carrying these headers.
    not_modified: Option<(String, Vec<(String, String)>)>,
    seen: Vec<(Method, HeaderMap)>,
}

impl Origin {
    fn answer(&self, body: &str, headers: &[(&str, &str)]) {
        let mut s = self.inner.lock().unwrap();
        s.body = body.to_owned();
        s.headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }

    fn not_modified(&self, etag: &str, headers: &[(&str, &str)]) {
        self.inner.lock().unwrap().not_modified = Some((
            etag.to_owned(),
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ));
    }

    fn requests(&self) -> usize {
        self.inner.lock().unwrap().seen.len()
    }

    fn last(&self) -> (Method, HeaderMap) {
        self.inner.lock().unwrap().seen.last().cloned().unwrap()
    }
}

async fn origin(State(origin): State<Origin>, request: Request<Body>) -> Response<Body> {
    let mut s = origin.inner.lock().unwrap();
    s.seen
        .push((request.method().clone(), request.headers().clone()));
    let asked = request
        .headers()
        .get("if-none-match")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut response = Response::new(Body::from(s.body.clone()));
    let headers = match (&s.not_modified, asked) {
        (Some((etag, headers)), Some(asked)) if asked.contains(etag.as_str()) => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.body_mut() = Body::empty();
            headers.clone()
        }
        _ => s.headers.clone(),
    };
    for (k, v) in headers {
        response
            .headers_mut()
            .append::<axum::http::HeaderName>(k.parse().unwrap(), v.parse().unwrap());
    }
    response
}

/// The layer in front of a fresh origin: the base URL and the origin.
async fn cache(name: &str) -> (String, Origin) {
    let o = Origin::default();
    let layer = CacheLayer::new(Duration::from_secs(3600))
        .name(name)
        .freshness_from_response();
    // A path of its own: a write to a path drops that path's pages in
    // every layer of the process.
    let path = format!("/{name}");
    let app = Router::new()
        .route(&path, any(origin))
        .layer(layer)
        .with_state(o.clone());
    (serve(app).await + &path, o)
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    request(Method::GET, url, headers).await
}

async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut r = client().request(method, url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = tokio::time::timeout(Duration::from_secs(10), r.send())
        .await
        .expect("answered in time")
        .unwrap();
    let status = r.status().as_u16();
    let mut headers = HeaderMap::new();
    for (k, v) in r.headers() {
        headers.append(
            axum::http::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
            v.as_bytes().try_into().unwrap(),
        );
    }
    Got {
        status,
        headers,
        body: r.text().await.unwrap(),
    }
}

fn header<'a>(got: &'a Got, name: &str) -> Option<&'a str> {
    got.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_response_with_max_age_is_served_from_the_cache_with_its_age() {
    let (url, o) = cache("fr-max-age").await;
    o.answer("one", &[("cache-control", "max-age=3600"), ("age", "30")]);
    let first = get(&url, &[]).await;
    o.answer("two", &[("cache-control", "max-age=3600")]);
    let second = get(&url, &[]).await;
    assert_eq!((first.body.as_str(), second.body.as_str()), ("one", "one"));
    assert_eq!(o.requests(), 1);
    assert_eq!(header(&second, "x-cache"), Some("HIT"));
    let age: u64 = header(&second, "age").unwrap().parse().unwrap();
    assert!(age >= 30, "the origin's Age counts: {age}");
}

#[tokio::test]
async fn a_response_without_freshness_or_validator_is_never_served_from_the_cache() {
    let (url, o) = cache("fr-none").await;
    o.answer("one", &[]);
    get(&url, &[]).await;
    o.answer("two", &[]);
    assert_eq!(get(&url, &[]).await.body, "two");
    assert_eq!(o.requests(), 2);
}

#[tokio::test]
async fn private_no_store_and_set_cookie_responses_are_never_shared() {
    for (i, headers) in [
        vec![("cache-control", "private, max-age=3600")],
        vec![("cache-control", "max-age=3600, no-store")],
        vec![("cache-control", "max-age=3600"), ("set-cookie", "s=1")],
        vec![("cache-control", "max-age=3600, s-maxage=0")],
        vec![("cache-control", "max-age=3600"), ("vary", "*")],
    ]
    .into_iter()
    .enumerate()
    {
        let (url, o) = cache(&format!("fr-private-{i}")).await;
        o.answer("alice", &headers);
        get(&url, &[]).await;
        o.answer("bob", &headers);
        assert_eq!(get(&url, &[]).await.body, "bob", "{headers:?}");
        assert_eq!(o.requests(), 2, "{headers:?}");
    }
}

#[tokio::test]
async fn a_stale_response_is_revalidated_and_a_304_keeps_its_body_and_updates_its_headers() {
    let (url, o) = cache("fr-304").await;
    o.answer(
        "body-v1",
        &[
            ("cache-control", "max-age=0"),
            ("etag", "\"v1\""),
            ("x-version", "1"),
        ],
    );
    get(&url, &[]).await;
    o.not_modified("\"v1\"", &[("etag", "\"v1\""), ("x-version", "2")]);
    o.answer("must not be sent", &[]);
    let second = get(&url, &[]).await;
    let (method, seen) = o.last();
    assert_eq!(method, Method::GET);
    assert_eq!(seen.get("if-none-match").unwrap(), "\"v1\"");
    assert_eq!(second.status, 200);
    assert_eq!(second.body, "body-v1");
    assert_eq!(header(&second, "x-version"), Some("2"));
    assert_eq!(header(&second, "etag"), Some("\"v1\""));
}

#[tokio::test]
async fn a_changed_response_replaces_the_stale_one() {
    let (url, o) = cache("fr-changed").await;
    o.answer("old", &[("cache-control", "max-age=0"), ("etag", "\"a\"")]);
    get(&url, &[]).await;
    o.answer(
        "new",
        &[("cache-control", "max-age=3600"), ("etag", "\"b\"")],
    );
    assert_eq!(get(&url, &[]).await.body, "new");
    assert_eq!(get(&url, &[]).await.body, "new");
    assert_eq!(o.requests(), 2);
}

#[tokio::test]
async fn a_304_answering_the_revalidation_keeps_the_stored_validator_and_checksum() {
    let (url, o) = cache("fr-304-validator").await;
    o.answer(
        "old",
        &[
            ("cache-control", "max-age=0"),
            ("etag", "\"a\""),
            ("content-md5", "stored=="),
        ],
    );
    get(&url, &[]).await;
    // A compressing server spells the ETag of the same body differently.
    o.not_modified(
        "\"a\"",
        &[
            ("etag", "\"a-gzip\""),
            ("content-md5", "other=="),
            ("x-new", "1"),
        ],
    );
    let second = get(&url, &[]).await;
    assert_eq!((second.status, second.body.as_str()), (200, "old"));
    assert_eq!(header(&second, "etag"), Some("\"a\""));
    assert_eq!(header(&second, "content-md5"), Some("stored=="));
    assert_eq!(header(&second, "x-new"), Some("1"));
}

#[tokio::test]
async fn an_invalid_age_makes_a_response_stale_never_fresher() {
    for (i, age) in ["abc", "-7200", "7200.0", "0, 0", "7200;x=1"]
        .iter()
        .enumerate()
    {
        let (url, o) = cache(&format!("fr-age-{i}")).await;
        o.answer("one", &[("cache-control", "max-age=3600"), ("age", age)]);
        get(&url, &[]).await;
        o.answer("two", &[("cache-control", "max-age=3600")]);
        assert_eq!(get(&url, &[]).await.body, "two", "Age: {age}");
    }
}

#[tokio::test]
async fn surrogate_directives_targeted_at_this_cache_win_and_others_are_ignored() {
    let (url, o) = cache("fr-surrogate-target").await;
    o.answer(
        "page",
        &[
            ("cache-control", "no-store"),
            (
                "surrogate-control",
                "no-store, max-age=60;ultracache, no-store;other",
            ),
        ],
    );
    get(&url, &[]).await;
    let (_, seen) = o.last();
    assert_eq!(
        seen.get("surrogate-capability").unwrap(),
        "ultracache=\"Surrogate/1.0\""
    );
    get(&url, &[]).await;
    assert_eq!(o.requests(), 1);
}

#[tokio::test]
async fn directive_names_are_case_insensitive() {
    let (url, o) = cache("fr-case").await;
    o.answer("one", &[("cache-control", "MAX-AGE=3600, NO-CACHE")]);
    get(&url, &[]).await;
    o.answer("two", &[("cache-control", "max-age=3600")]);
    assert_eq!(get(&url, &[]).await.body, "two");
}

#[tokio::test]
async fn the_clients_validators_are_answered_here_and_never_turn_a_fill_into_a_304() {
    let (url, o) = cache("fr-client-cond").await;
    o.answer(
        "page",
        &[("cache-control", "max-age=3600"), ("etag", "\"e\"")],
    );
    o.not_modified("\"e\"", &[("etag", "\"e\"")]);
    // A miss carrying the client's own validator: the cache fetches the whole
    // response, stores it, and answers the client's condition itself.
    let first = get(&url, &[("if-none-match", "\"e\"")]).await;
    let (_, seen) = o.last();
    assert!(seen.get("if-none-match").is_none());
    assert_eq!(first.status, 304);
    let second = get(&url, &[]).await;
    assert_eq!((second.status, second.body.as_str()), (200, "page"));
    assert_eq!(o.requests(), 1);
    let third = get(&url, &[("if-none-match", "W/\"e\"")]).await;
    assert_eq!(third.status, 304);
}

#[tokio::test]
async fn if_modified_since_is_answered_from_the_stored_last_modified() {
    let (url, o) = cache("fr-ims").await;
    o.answer(
        "page",
        &[
            ("cache-control", "max-age=3600"),
            ("last-modified", "Mon, 02 Jan 2023 00:00:00 GMT"),
        ],
    );
    get(&url, &[]).await;
    let later = get(
        &url,
        &[("if-modified-since", "Tue, 03 Jan 2023 00:00:00 GMT")],
    )
    .await;
    assert_eq!(later.status, 304);
    let earlier = get(
        &url,
        &[("if-modified-since", "Sun, 01 Jan 2023 00:00:00 GMT")],
    )
    .await;
    assert_eq!((earlier.status, earlier.body.as_str()), (200, "page"));
    assert_eq!(o.requests(), 1);
}

#[tokio::test]
async fn no_etag_is_invented_for_a_response_the_origin_sent_without_one() {
    let (url, o) = cache("fr-no-etag").await;
    o.answer("page", &[("cache-control", "max-age=3600")]);
    let first = get(&url, &[]).await;
    let second = get(&url, &[]).await;
    assert!(header(&first, "etag").is_none());
    assert!(header(&second, "etag").is_none());
}

#[tokio::test]
async fn surrogate_control_decides_here_and_never_reaches_the_client() {
    let (url, o) = cache("fr-surrogate").await;
    o.answer(
        "page",
        &[
            ("cache-control", "no-cache"),
            ("surrogate-control", "max-age=3600"),
        ],
    );
    let first = get(&url, &[]).await;
    let second = get(&url, &[]).await;
    assert_eq!(o.requests(), 1);
    for got in [&first, &second] {
        assert!(header(got, "surrogate-control").is_none());
        assert_eq!(header(got, "cache-control"), Some("no-cache"));
    }
    // And `Surrogate-Control: no-store` keeps a response out.
    let (url, o) = cache("fr-surrogate-no-store").await;
    o.answer(
        "page",
        &[
            ("cache-control", "max-age=3600"),
            ("surrogate-control", "no-store"),
        ],
    );
    get(&url, &[]).await;
    get(&url, &[]).await;
    assert_eq!(o.requests(), 2);
}

#[tokio::test]
async fn a_request_with_no_cache_or_max_age_zero_goes_to_the_origin() {
    let (url, o) = cache("fr-req-no-cache").await;
    o.answer(
        "one",
        &[("cache-control", "max-age=3600"), ("etag", "\"1\"")],
    );
    get(&url, &[]).await;
    o.answer(
        "two",
        &[("cache-control", "max-age=3600"), ("etag", "\"2\"")],
    );
    assert_eq!(
        get(&url, &[("cache-control", "no-cache")]).await.body,
        "two"
    );
    assert_eq!(o.requests(), 2);
    o.answer(
        "three",
        &[("cache-control", "max-age=3600"), ("etag", "\"3\"")],
    );
    assert_eq!(
        get(&url, &[("cache-control", "max-age=0")]).await.body,
        "three"
    );
    assert_eq!(o.requests(), 3);
    // The refreshed response is the one kept.
    assert_eq!(get(&url, &[]).await.body, "three");
    assert_eq!(o.requests(), 3);
}

#[tokio::test]
async fn a_head_the_cache_cannot_answer_reaches_the_origin_as_a_head() {
    let (url, o) = cache("fr-head").await;
    o.answer("page", &[("cache-control", "max-age=3600")]);
    let head = request(Method::HEAD, &url, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(o.last().0, Method::HEAD);
    // Nothing was stored from it: the GET goes to the origin, then a HEAD is
    // answered from what the GET stored, with the GET's length.
    assert_eq!(get(&url, &[]).await.body, "page");
    assert_eq!(o.requests(), 2);
    let head = request(Method::HEAD, &url, &[]).await;
    assert_eq!(o.requests(), 2);
    assert_eq!(header(&head, "content-length"), Some("4"));
    assert_eq!(head.body, "");
}

#[tokio::test]
async fn a_successful_unsafe_request_drops_the_stored_response() {
    let (url, o) = cache("fr-unsafe").await;
    o.answer("one", &[("cache-control", "max-age=3600")]);
    get(&url, &[]).await;
    request(Method::POST, &url, &[]).await;
    o.answer("two", &[("cache-control", "max-age=3600")]);
    assert_eq!(get(&url, &[]).await.body, "two");
    assert_eq!(o.requests(), 3);
}

#[tokio::test]
async fn each_stored_response_answers_only_requests_its_vary_matches() {
    let (url, o) = cache("fr-vary").await;
    o.answer(
        "french",
        &[
            ("cache-control", "max-age=3600"),
            ("vary", "accept-language"),
        ],
    );
    get(&url, &[("accept-language", "fr")]).await;
    o.answer(
        "german",
        &[
            ("cache-control", "max-age=3600"),
            ("vary", "accept-language"),
        ],
    );
    assert_eq!(get(&url, &[("accept-language", "de")]).await.body, "german");
    assert_eq!(get(&url, &[("accept-language", "fr")]).await.body, "french");
    assert_eq!(get(&url, &[("accept-language", "de")]).await.body, "german");
    assert_eq!(o.requests(), 2);
}

#[tokio::test]
async fn range_and_precondition_requests_pass_through() {
    let (url, o) = cache("fr-range").await;
    o.answer("page", &[("cache-control", "max-age=3600")]);
    get(&url, &[]).await;
    get(&url, &[("range", "bytes=0-1")]).await;
    get(&url, &[("if-match", "\"x\"")]).await;
    assert_eq!(o.requests(), 3);
}

#[tokio::test]
async fn a_revalidated_page_is_served_fresh_for_the_304s_lifetime() {
    let (url, o) = cache("fr-304-fresh").await;
    o.answer("body", &[("cache-control", "max-age=0"), ("etag", "\"v\"")]);
    get(&url, &[]).await;
    o.not_modified(
        "\"v\"",
        &[("etag", "\"v\""), ("cache-control", "max-age=3600")],
    );
    assert_eq!(get(&url, &[]).await.body, "body");
    let third = get(&url, &[]).await;
    assert_eq!(third.body, "body");
    assert_eq!(header(&third, "x-cache"), Some("HIT"));
    assert_eq!(o.requests(), 2);
}
