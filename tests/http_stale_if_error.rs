//! `CacheLayer::stale_if_error`: a site keeps serving its pages through a
//! database outage (`X-Cache: STALE`), but never a page whose data was
//! written, and never in place of an answer that is not an error.

mod common;

use std::sync::atomic::{AtomicU16, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::web::{client, serve};
use ultracache::http::CacheLayer;
use ultracache::{invalidate, tracks, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "sie.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

/// What the "database" answers: 200 when up, else this status.
#[derive(Clone, Default)]
struct Db(Arc<AtomicU16>);

impl Db {
    fn set(&self, status: u16) {
        self.0.store(status, SeqCst);
    }
}

async fn page(db: Db, id: i64) -> Response {
    match db.0.load(SeqCst) {
        0 | 200 => format!("post {}", load(id).id).into_response(),
        status => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "database down",
        )
            .into_response(),
    }
}

const TIMEOUT: Duration = Duration::from_millis(200);
const PAST: Duration = Duration::from_millis(300);

async fn get_page(c: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, cache, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_serves_through_a_database_outage_but_never_a_written_page() {
    let db = Db::default();
    let d = db.clone();
    let app = Router::new()
        .route(
            "/posts/{id}",
            get(move |Path(id): Path<i64>| {
                let d = d.clone();
                async move { page(d, id).await }
            }),
        )
        .layer(CacheLayer::new(TIMEOUT).stale_if_error(Duration::from_secs(3600)));
    let base = serve(app).await;
    let c = client();
    let (one, two, three) = (
        format!("{base}/posts/1"),
        format!("{base}/posts/2"),
        format!("{base}/posts/3"),
    );
    for url in [&one, &two, &three] {
        assert_eq!(get_page(&c, url).await.1, "MISS");
    }

    // The database goes down; the pages expire.
    db.set(500);
    tokio::time::sleep(PAST).await;
    assert_eq!(
        get_page(&c, &one).await,
        (200, "STALE".into(), "post 1".into()),
        "a server error is answered with the last good page"
    );
    db.set(503);
    assert_eq!(
        get_page(&c, &one).await,
        (200, "STALE".into(), "post 1".into())
    );

    // Post 2 is written: its page is known to be wrong.
    invalidate(&load(2));
    assert_eq!(
        get_page(&c, &two).await,
        (503, "MISS".into(), "database down".into()),
        "a written page is never served stale"
    );

    // An answer that is not an error is not replaced by the old page.
    db.set(404);
    assert_eq!(get_page(&c, &three).await.0, 404);

    // The database is back: fresh pages again.
    db.set(200);
    assert_eq!(
        get_page(&c, &one).await,
        (200, "MISS".into(), "post 1".into())
    );
    assert_eq!(get_page(&c, &one).await.1, "HIT");
}

/// A handler that hangs behind a timeout layer: the timeout's answer (408
/// by `tower_http`'s default, or 504) is a failure, answered with the last
/// good page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_times_out_is_answered_with_the_last_good_page() {
    use std::sync::atomic::AtomicBool;
    use tower_http::timeout::TimeoutLayer;

    static HANGS: AtomicBool = AtomicBool::new(false);
    async fn slow(Path(id): Path<i64>) -> String {
        if HANGS.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        format!("slow {}", load(id + 100).id)
    }
    let mut bases = Vec::new();
    for status in [StatusCode::REQUEST_TIMEOUT, StatusCode::GATEWAY_TIMEOUT] {
        let app = Router::new()
            .route("/slow/{id}", get(slow))
            .layer(TimeoutLayer::with_status_code(
                status,
                Duration::from_millis(100),
            ))
            .layer(CacheLayer::new(TIMEOUT).stale_if_error(Duration::from_secs(3600)));
        bases.push((status, serve(app).await));
    }
    let c = client();
    for (_, base) in &bases {
        assert_eq!(get_page(&c, &format!("{base}/slow/1")).await.1, "MISS");
    }
    HANGS.store(true, SeqCst);
    tokio::time::sleep(PAST).await;
    for (status, base) in &bases {
        assert_eq!(
            get_page(&c, &format!("{base}/slow/1")).await,
            (200, "STALE".into(), "slow 101".into()),
            "a {status} from the timeout layer"
        );
        // A page never cached has nothing to fall back on.
        assert_eq!(
            get_page(&c, &format!("{base}/slow/2")).await.0,
            status.as_u16()
        );
    }
    HANGS.store(false, SeqCst);
}
