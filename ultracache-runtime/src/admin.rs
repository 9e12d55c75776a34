//! The admin page: what is cached, how well, and buttons to forget (feature
//! `admin`). Mount it under a path of your choice; it is closed unless the
//! [`Auth`] you give it says otherwise.
//!
//! ```
//! use axum::Router;
//! use ultracache::admin::{self, Auth};
//!
//! let app: Router = Router::new().nest("/_cache", admin::router(Auth::bearer("s3cret")));
//! ```
//!
//! Pages (server-rendered HTML, no external assets): the overview (entries, hit
//! ratio per cache and per route, a hit-ratio chart), cached URLs (sortable,
//! with hits, misses, age, expiry and dependencies, and a purge button each),
//! and the model view (what depends on `blog.post:42`, with an invalidate
//! button). The same data as JSON under `api/`. Browsers sign in once at
//! `login?token=…` (a `SameSite=Strict`, `HttpOnly` cookie); forms carry a
//! CSRF token. Tools send `Authorization: Bearer …`. The counters, per cache
//! and per route, are also at `metrics` in the Prometheus text format, for a
//! Prometheus server to scrape with the same bearer token.
//!
//! Inside: `auth` (who may come in, and the one access check, an
//! extractor), `pages` (HTML), `api` (JSON), `html` (building blocks and the
//! chart), `sampler` (the hit-ratio history).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::{Form, Query, State};
use axum::http::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::http::{find_urls, purge_urls, route_stats, url_stats};

mod api;
mod auth;
mod html;
mod metrics;
mod pages;
mod sampler;

use api::*;
pub use auth::Auth;
use auth::*;
use html::*;
use pages::*;
use sampler::*;

pub(crate) struct Admin {
    auth: Auth,
    /// The forms' CSRF token for requests let in by a custom check.
    csrf: String,
    /// Signed-in browsers, newest last (at most [`MAX_SESSIONS`]): each
    /// login gets a random cookie value (never the token) and a CSRF token of
    /// its own.
    sessions: Mutex<VecDeque<Session>>,
    history: Mutex<VecDeque<Sample>>,
}

/// Every admin response: never stored by a cache (a `CacheLayer` around
/// the router, a proxy, the browser).
async fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
    response
}

type Shared = Arc<Admin>;

/// Where the router is mounted (`/_cache`), for links that work with and
/// without a trailing slash.
fn base(parts: &Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::NestedPath>()
        .map(|n| n.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// The admin router; nest it where you like (`.nest("/_cache", router(auth))`).
pub fn router(auth: Auth) -> Router {
    if auth.token.as_deref() == Some("") {
        tracing::error!(
            "ultracache: the admin page's bearer token is empty: it is closed to everyone"
        );
    }
    let admin = Arc::new(Admin {
        auth,
        csrf: random_token(),
        sessions: Mutex::new(VecDeque::new()),
        history: Mutex::new(VecDeque::new()),
    });
    admin.sample();
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&admin);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(admin) => admin.sample(),
                    None => return,
                }
            }
        });
    }
    Router::new()
        .route("/", get(overview))
        .route("/urls", get(urls))
        .route("/models", get(models))
        .route("/login", get(login))
        .route("/purge", post(purge_form))
        .route("/invalidate", post(invalidate_form))
        .route("/clear", post(clear_form))
        .route("/api/stats", get(api_stats))
        .route("/api/urls", get(api_urls))
        .route("/api/models", get(api_models))
        .route("/api/purge", post(api_purge))
        .route("/api/invalidate", post(api_invalidate))
        .route("/api/clear", post(api_clear))
        .route("/metrics", get(metrics::metrics))
        .layer(axum::middleware::map_response(no_store))
        .with_state(admin)
}
