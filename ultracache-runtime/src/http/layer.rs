//! The tower layer and service: decide whether a request may use the cache,
//! answer it from a stored page, or run the handler once (however many
//! requests miss together), record what it read, and store what may be stored.
//!
//! Here: the layer and its options. Then `service` (the tower glue),
//! `policy` (keys, the bypass decision, answering from a page), `flow` (a
//! request's way through the cache) and `compute` (running the handler and
//! deciding what is stored).

use std::collections::HashSet;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::MatchedPath;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{HeaderName, AUTHORIZATION, CONTENT_LENGTH, COOKIE, ETAG, SET_COOKIE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;

use super::counts::{Counts, STATS};
use super::freshness::{self, Use};
use super::key::{
    cookie, default_key, glob_match, host, push_cookie, push_headers, request_url, QueryParams,
};
use super::page::{
    etag_of, mark, no_cache_headers, refuse_to_store, storable_headers, vary_names, ClientCaching,
    Page, Served, Stored,
};
use crate::cache::{Cache, Outcome};
use crate::paths::{canonical_path, path_dep};
use crate::recorder::{record_future, track_dep};

mod compute;
mod flow;
mod policy;
mod service;

use compute::*;
pub(crate) use policy::policies;
use policy::*;
pub use service::CacheService;
use service::*;

type KeyFn = Arc<dyn Fn(&Parts) -> String + Send + Sync>;
type PrefixFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
type BeforeStore = Arc<dyn Fn(Response<Bytes>) -> Response<Bytes> + Send + Sync>;
type OnServe = Arc<dyn Fn(&mut Response<Body>) + Send + Sync>;

/// Bodies larger than this are streamed through, not stored, unless the
/// layer says otherwise.
const DEFAULT_MAX_BODY: usize = 4 << 20;

#[derive(Clone)]
struct Options {
    name: &'static str,
    timeout: Option<Duration>,
    key_fn: Option<KeyFn>,
    key_prefix: Option<PrefixFn>,
    query: QueryParams,
    vary_headers: Vec<HeaderName>,
    vary_cookies: Vec<String>,
    session_cookie: Option<String>,
    /// Requests that carry cookies may use the cache (set by
    /// `cache_requests_with_cookies`, `vary_cookie` and `anonymous_only`).
    with_cookies: bool,
    allow_authorized: bool,
    statuses: Vec<StatusCode>,
    before_store: Option<BeforeStore>,
    on_serve: Option<OnServe>,
    ignore: Vec<String>,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
    client: ClientCaching,
    shared_max_age: Option<Duration>,
    max_body: usize,
    store: Option<&'static str>,
    surrogate: Option<HeaderName>,
    warm_token: Option<Arc<str>>,
    shared: bool,
    /// Freshness from each response's headers (a shared HTTP cache).
    from_response: bool,
}

/// Caches whole responses of the routes it wraps; see the [module
/// docs](super) for the rules it follows.
///
/// ```
/// use std::time::Duration;
/// use axum::http::StatusCode;
/// use ultracache::http::{CacheLayer, ClientCaching};
///
/// let layer = CacheLayer::new(Duration::from_secs(600))
///     .name("pages")
///     .query_allow(["page", "sort"])
///     .vary_cookie("lang")
///     .anonymous_only("sessionid")
///     .statuses([200, 203, 300, 301, 404, 410])
///     .ignore_paths(["/admin/*"])
///     .stale_while_revalidate(Duration::from_secs(60))
///     .client_caching(ClientCaching::Revalidate)
///     .shared_max_age(Duration::from_secs(86_400))
///     .on_serve(|response| {
///         response.headers_mut().insert("x-served-by", "app-1".parse().unwrap());
///     });
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    options: Options,
    policy: Arc<OnceLock<Arc<Policy>>>,
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("name", &self.options.name)
            .field("timeout", &self.options.timeout)
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// Keeps responses for `timeout`. A timeout of zero stores nothing and
    /// tells clients not to cache either.
    pub fn new(timeout: Duration) -> Self {
        Self::with_timeout(Some(timeout))
    }

    /// Keeps responses until something they read is written (or the store
    /// evicts them).
    pub fn forever() -> Self {
        Self::with_timeout(None)
    }

    fn with_timeout(timeout: Option<Duration>) -> Self {
        CacheLayer {
            options: Options {
                name: "http",
                timeout,
                key_fn: None,
                key_prefix: None,
                query: QueryParams::All,
                vary_headers: Vec::new(),
                vary_cookies: Vec::new(),
                session_cookie: None,
                with_cookies: false,
                allow_authorized: false,
                statuses: vec![StatusCode::OK],
                before_store: None,
                on_serve: None,
                ignore: Vec::new(),
                stale_while_revalidate: None,
                stale_if_error: None,
                client: ClientCaching::default(),
                shared_max_age: None,
                max_body: DEFAULT_MAX_BODY,
                store: None,
                surrogate: None,
                warm_token: None,
                shared: false,
                from_response: false,
            },
            policy: Arc::new(OnceLock::new()),
        }
    }

    fn set(mut self, f: impl FnOnce(&mut Options)) -> Self {
        f(&mut self.options);
        // A changed layer is a new cache.
        self.policy = Arc::new(OnceLock::new());
        self
    }

    /// The name its statistics appear under (default `"http"`).
    pub fn name(self, name: &str) -> Self {
        let name = crate::names::intern(name);
        self.set(|o| o.name = name)
    }

    /// Keeps entries in the named store of the [`Config`](crate::Config).
    pub fn store(self, store: &'static str) -> Self {
        self.set(|o| o.store = Some(store))
    }

    /// Computes the key from the request instead of path + query + varied
    /// headers.
    pub fn key_fn(self, f: impl Fn(&Parts) -> String + Send + Sync + 'static) -> Self {
        self.set(|o| o.key_fn = Some(Arc::new(f)))
    }

    /// Prefixes every key with what `f` returns; `None` means "do not cache
    /// this request" (django-fancy-cache's `key_prefix`).
    pub fn key_prefix(self, f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.set(|o| o.key_prefix = Some(Arc::new(f)))
    }

    /// Only these query parameters make a different page; the others are
    /// ignored (`?page=2&utm_source=x` is `?page=2`). Order never matters.
    pub fn query_allow<I: IntoIterator<Item = S>, S: Into<String>>(self, names: I) -> Self {
        let names = names.into_iter().map(Into::into).collect();
        self.set(|o| o.query = QueryParams::Allow(names))
    }

    /// These query parameters are ignored; the others make a different page.
    pub fn query_deny<I: IntoIterator<Item = S>, S: Into<String>>(self, names: I) -> Self {
        let names = names.into_iter().map(Into::into).collect();
        self.set(|o| o.query = QueryParams::Deny(names))
    }

    /// The query string is ignored altogether.
    pub fn ignore_query(self) -> Self {
        self.set(|o| o.query = QueryParams::Ignore)
    }

    /// Keeps one entry per value of this request header (beyond the
    /// response's own `Vary`).
    pub fn vary_header(self, name: HeaderName) -> Self {
        self.set(|o| o.vary_headers.push(name))
    }

    /// Keeps one entry per value of this request cookie (read as axum-extra's
    /// `CookieJar` reads it). Requests with cookies then use the cache: the
    /// pages vary on this cookie, and on no other.
    pub fn vary_cookie(self, name: &str) -> Self {
        let name = name.to_owned();
        self.set(|o| {
            o.vary_cookies.push(name);
            o.with_cookies = true;
        })
    }

    /// Requests carrying this cookie (a logged-in session) bypass the cache,
    /// as requests with `Authorization` always do; requests with other
    /// cookies use it (the pages depend on no cookie but this one).
    pub fn anonymous_only(self, session_cookie: &str) -> Self {
        let name = session_cookie.to_owned();
        self.set(|o| {
            o.session_cookie = Some(name);
            o.with_cookies = true;
        })
    }

    /// Requests that carry cookies use the cache like any other: for pages
    /// that read no cookie at all.
    ///
    /// By default a request with a `Cookie` header bypasses the cache (as
    /// Varnish's built-in rules do): a page personalised on a cookie would
    /// otherwise go to the next visitor. [`vary_cookie`](Self::vary_cookie)
    /// and [`anonymous_only`](Self::anonymous_only) also let such requests
    /// in, for the cookies they name.
    pub fn cache_requests_with_cookies(self) -> Self {
        self.set(|o| o.with_cookies = true)
    }

    /// Requests with `Authorization` may use the cache: each credential gets
    /// entries of its own (RFC 9111 §3.5 lets the origin opt in).
    pub fn allow_authorized(self) -> Self {
        self.set(|o| o.allow_authorized = true)
    }

    /// The statuses that may be stored (default: 200 only).
    pub fn statuses<I: IntoIterator<Item = u16>>(self, statuses: I) -> Self {
        let statuses = statuses
            .into_iter()
            .filter_map(|s| StatusCode::from_u16(s).ok())
            .collect();
        self.set(|o| o.statuses = statuses)
    }

    /// Runs once on a response about to be stored; what it returns is stored
    /// and served (django-fancy-cache's `post_process_response`).
    pub fn before_store(
        self,
        f: impl Fn(Response<Bytes>) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.set(|o| o.before_store = Some(Arc::new(f)))
    }

    /// Runs on every response served, whatever its status and however it was
    /// served; its changes are never stored
    /// (`post_process_response_always`). Use it for per-route headers such as
    /// `Edge-Control` too.
    pub fn on_serve(self, f: impl Fn(&mut Response<Body>) + Send + Sync + 'static) -> Self {
        self.set(|o| o.on_serve = Some(Arc::new(f)))
    }

    /// Paths that are never cached (`*` wildcards, anchored).
    pub fn ignore_paths<I: IntoIterator<Item = S>, S: Into<String>>(self, patterns: I) -> Self {
        let patterns = patterns.into_iter().map(Into::into).collect();
        self.set(|o| o.ignore = patterns)
    }

    /// After the timeout, keeps serving the page for up to `window` more
    /// (`X-Cache: STALE`) while one background request refreshes it.
    pub fn stale_while_revalidate(self, window: Duration) -> Self {
        self.set(|o| o.stale_while_revalidate = Some(window))
    }

    /// Serves stale on error, never stale on change: after the timeout, a
    /// page is kept for `grace` more and served (`X-Cache: STALE`) when the
    /// handler answers its URL with a server error (5xx), times out (a 408
    /// or 504 from a timeout layer inside this one, such as
    /// `tower_http::timeout::TimeoutLayer`) or fails — so that
    /// a database outage does not turn a cached site into an error page (as
    /// Varnish's grace mode and RFC 5861's `stale-if-error`). A page
    /// something it read was written since is never served this way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ultracache::http::CacheLayer;
    ///
    /// let layer = CacheLayer::new(Duration::from_secs(60))
    ///     .stale_if_error(Duration::from_secs(24 * 3600));
    /// ```
    pub fn stale_if_error(self, grace: Duration) -> Self {
        self.set(|o| o.stale_if_error = Some(grace))
    }

    /// What clients are told (see [`ClientCaching`]).
    pub fn client_caching(self, mode: ClientCaching) -> Self {
        self.set(|o| o.client = mode)
    }

    /// Adds `s-maxage` for shared caches (proxies whose entries are purged
    /// when data changes).
    pub fn shared_max_age(self, max_age: Duration) -> Self {
        self.set(|o| o.shared_max_age = Some(max_age))
    }

    /// Tags responses with their surrogate keys in this header (`xkey` for
    /// Varnish's xkey vmod, `Surrogate-Key`, `Cache-Tag`): their dependencies
    /// (`blog.post:42`, `blog.post`) and `kind:*` for each kind of object they
    /// show, so a proxy can drop every page that showed an object at once.
    pub fn surrogate_keys(self, header: HeaderName) -> Self {
        self.set(|o| o.surrogate = Some(header))
    }

    /// Requests carrying `x-ultracache-warm: <token>` compute the page again
    /// and store it, whatever is cached (the `ultracache warm --warm-token`
    /// command): pages cached forever are regenerated by the warm-up only,
    /// never by a stranger's header.
    pub fn warm_token(self, token: &str) -> Self {
        let token: Arc<str> = Arc::from(token);
        self.set(|o| o.warm_token = Some(token))
    }

    /// Keeps pages in the shared Redis tier too (see [`redis`](crate::redis)):
    /// every app server, and `ultracache proxy`, can serve them. Without the
    /// `redis` feature or a configured tier it does nothing.
    pub fn shared(self) -> Self {
        self.set(|o| o.shared = true)
    }

    /// Acts as a shared HTTP cache (RFC 9111) in front of any origin: each
    /// response says itself whether it is stored and how long it is fresh
    /// (`Surrogate-Control`, `s-maxage`, `max-age`, `Expires`, or a tenth of
    /// its age since `Last-Modified`); a stale response is revalidated with
    /// a conditional request (`If-None-Match`, `If-Modified-Since`) and a 304
    /// updates it; requests' own `Cache-Control` (`no-cache`, `max-age`,
    /// `min-fresh`, `max-stale`, `no-store`) is honoured; responses keep the
    /// origin's headers and validators (no ETag is added). The layer's
    /// timeout becomes the longest any response is kept, fresh or stale, and
    /// [`statuses`](Self::statuses), [`client_caching`](Self::client_caching)
    /// and [`stale_while_revalidate`](Self::stale_while_revalidate) no longer
    /// apply. Dependencies recorded while a response is computed still drop
    /// it when written, as in the default mode.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ultracache::http::CacheLayer;
    ///
    /// // Keep what the origin allows, a day at most.
    /// let layer = CacheLayer::new(Duration::from_secs(86_400)).freshness_from_response();
    /// # let _ = layer;
    /// ```
    pub fn freshness_from_response(self) -> Self {
        self.set(|o| o.from_response = true)
    }

    /// Larger bodies are streamed through and not stored (default 4 MiB).
    pub fn max_body_size(self, bytes: usize) -> Self {
        self.set(|o| o.max_body = bytes)
    }

    /// The key a request's page is kept under before the response's `Vary`
    /// is known; `None` when the request bypasses the cache. For the fuzz
    /// targets only.
    #[cfg(fuzzing)]
    pub(crate) fn fuzz_key(&self, parts: &Parts) -> Option<String> {
        match self.policy().decide(parts) {
            Decision::Cache(plan) => Some(plan.base),
            Decision::Bypass { .. } => None,
        }
    }

    fn policy(&self) -> Arc<Policy> {
        Arc::clone(self.policy.get_or_init(|| {
            let o = &self.options;
            let kept = match (o.timeout, o.stale_while_revalidate) {
                (Some(t), Some(w)) if !o.from_response => Some(t + w),
                (t, _) => t,
            };
            let cache = Cache::new(o.name)
                .module("ultracache::http")
                .weigher(super::page::weigh)
                // A request chooses its URL: it weighs as the page does.
                .key_weigher(|key: &String| key.capacity());
            let cache = match kept {
                Some(t) => cache.timeout(t),
                None => cache.forever(),
            };
            let cache = match o.stale_if_error {
                Some(grace) if !o.from_response => cache.stale_if_error(grace),
                _ => cache,
            };
            let cache = match o.store {
                Some(s) => cache.store(s),
                None => cache,
            };
            #[cfg(feature = "purge")]
            let cache = cache.on_invalidated(page_dropped);
            let cache = if o.shared { cache.shared() } else { cache };
            let policy = Arc::new(Policy {
                options: o.clone(),
                cache,
                refreshing: Mutex::new(HashSet::new()),
            });
            register(&policy);
            policy
        }))
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            policy: self.policy(),
        }
    }
}
