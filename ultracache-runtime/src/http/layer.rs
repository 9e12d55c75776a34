//! The tower layer and service: decide whether a request may use the cache,
//! answer it from a stored page, or run the handler once (however many
//! requests miss together), record what it read, and store what may be stored.

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
use http::header::{HeaderName, AUTHORIZATION, CONTENT_LENGTH, COOKIE, ETAG};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;

use super::key::{cookie, default_key, glob_match, host, push_headers, request_url, QueryParams};
use super::page::{
    etag_of, mark, no_cache_headers, refuse_to_store, storable_headers, vary_names, ClientCaching,
    Page, Served, Stored,
};
use super::counts::{Counts, STATS};
use crate::cache::{Cache, Outcome};
use crate::paths::{canonical_path, path_dep};
use crate::recorder::{record_future, track_dep};

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
    client: ClientCaching,
    shared_max_age: Option<Duration>,
    max_body: usize,
    store: Option<&'static str>,
    surrogate: Option<HeaderName>,
    warm_token: Option<Arc<str>>,
    shared: bool,
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
                client: ClientCaching::default(),
                shared_max_age: None,
                max_body: DEFAULT_MAX_BODY,
                store: None,
                surrogate: None,
                warm_token: None,
                shared: false,
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
        let name = crate::dep::intern(name);
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

    /// Larger bodies are streamed through and not stored (default 4 MiB).
    pub fn max_body_size(self, bytes: usize) -> Self {
        self.set(|o| o.max_body = bytes)
    }

    fn policy(&self) -> Arc<Policy> {
        Arc::clone(self.policy.get_or_init(|| {
            let o = &self.options;
            let kept = match (o.timeout, o.stale_while_revalidate) {
                (Some(t), Some(w)) => Some(t + w),
                (t, _) => t,
            };
            let cache = Cache::new(o.name)
                .module("ultracache::http")
                .weigher(super::page::weigh);
            let cache = match kept {
                Some(t) => cache.timeout(t),
                None => cache.forever(),
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

/// The service [`CacheLayer`] wraps around a route or a router.
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService")
            .field("name", &self.policy.options.name)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for CacheService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The ready service serves this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move { policy.handle(inner, request).await })
    }
}

/// What a request may do with the cache.
enum Decision {
    /// Pass through; with `no_cache`, tell clients not to cache either.
    Bypass {
        no_cache: bool,
    },
    Cache(Plan),
}

/// Where a cacheable request's page lives.
#[derive(Clone)]
struct Plan {
    /// The key before the response's `Vary` is known.
    base: String,
    /// Path and normalized query.
    url: String,
    path: String,
    route: Option<String>,
}

/// What a computation of a page leaves: what to store (under the key it was
/// computed for) and what to send back.
struct Computed<E> {
    store: Option<Stored>,
    serve: Option<Reply<E>>,
}

enum Reply<E> {
    Page(Arc<Page>),
    Response(Response<Body>),
    Error(E),
}

/// Stores `Computed::store`; a hit comes back as `Computed` with no reply.
struct StoreOutcome;

impl<E> Outcome<Computed<E>> for StoreOutcome {
    type Value = Stored;
    fn value(result: &Computed<E>) -> Option<&Stored> {
        result.store.as_ref()
    }
    fn wrap(value: Stored) -> Computed<E> {
        Computed {
            store: Some(value),
            serve: None,
        }
    }
}

pub(crate) struct Policy {
    options: Options,
    pub(crate) cache: Cache<String, Stored>,
    refreshing: Mutex<HashSet<String>>,
}

async fn call<S>(inner: &mut S, request: Request<Body>) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(request).await
}

/// A copy of the request head (extensions included: path parameters live
/// there) for a request the layer sends itself.
fn copy_head(parts: &Parts) -> Request<Body> {
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

impl Policy {
    fn decide(&self, parts: &Parts) -> Decision {
        let o = &self.options;
        let bypass = Decision::Bypass { no_cache: false };
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return bypass;
        }
        if o.timeout == Some(Duration::ZERO) {
            return Decision::Bypass { no_cache: true };
        }
        let (path, url) = request_url(parts, &o.query);
        if o.ignore.iter().any(|p| glob_match(p, &path)) {
            return bypass;
        }
        if parts.headers.contains_key(AUTHORIZATION) && !o.allow_authorized {
            return bypass;
        }
        if parts.headers.contains_key(COOKIE) && !o.with_cookies {
            return bypass;
        }
        if let Some(session) = &o.session_cookie {
            if cookie(parts, session).is_some() {
                return bypass;
            }
        }
        let mut base = match &o.key_fn {
            Some(f) => f(parts),
            None => default_key(parts, &url),
        };
        if let Some(prefix) = &o.key_prefix {
            match prefix(parts) {
                Some(p) => base.insert_str(0, &p),
                None => return bypass,
            }
        }
        push_headers(&mut base, parts, &o.vary_headers);
        for name in &o.vary_cookies {
            base.push_str("\ncookie ");
            base.push_str(name);
            base.push('=');
            base.push_str(&cookie(parts, name).unwrap_or_default());
        }
        if o.allow_authorized {
            push_headers(&mut base, parts, &[AUTHORIZATION]);
        }
        Decision::Cache(Plan {
            base,
            url,
            path,
            route: parts
                .extensions
                .get::<MatchedPath>()
                .map(|m| m.as_str().to_owned()),
        })
    }

    /// Whether the request carries this layer's warm-up token.
    fn warming(&self, parts: &Parts) -> bool {
        let Some(token) = &self.options.warm_token else {
            return false;
        };
        parts
            .headers
            .get("x-ultracache-warm")
            .is_some_and(|v| v.as_bytes() == token.as_bytes())
    }

    fn served(&self, mut response: Response<Body>, served: Served) -> Response<Body> {
        mark(response.headers_mut(), served);
        if let Some(hook) = &self.options.on_serve {
            hook(&mut response);
        }
        response
    }

    fn respond(&self, page: &Page, parts: &Parts, served: Served) -> Response<Body> {
        let o = &self.options;
        let response = page.respond(
            &parts.method,
            &parts.headers,
            served,
            o.client,
            o.timeout,
            o.shared_max_age,
            o.surrogate.as_ref(),
        );
        self.served(response, served)
    }

    fn count(&self, plan: &Plan, hit: bool) {
        let count = |c: Arc<Counts>| if hit { c.hit() } else { c.miss() };
        count(STATS.url(&plan.url));
        if let Some(route) = &plan.route {
            count(STATS.route(route));
        }
    }

    async fn handle<S>(
        self: Arc<Self>,
        mut inner: S,
        request: Request<Body>,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let (parts, body) = request.into_parts();
        let plan = match self.decide(&parts) {
            Decision::Bypass { no_cache } => {
                let unsafe_method = !parts.method.is_safe();
                let target = unsafe_method.then(|| (parts.uri.clone(), host(&parts)));
                let mut response = call(&mut inner, Request::from_parts(parts, body)).await?;
                if let Some((uri, host)) = target {
                    let written = written_paths(&uri, &host, &response);
                    if !written.is_empty() {
                        crate::invalidation::invalidate_deps_async(&written).await;
                    }
                }
                if no_cache {
                    no_cache_headers(response.headers_mut());
                }
                return Ok(self.served(response, Served::Miss));
            }
            Decision::Cache(plan) => plan,
        };

        // The page, or the variants the URL's responses differ by.
        let (key, learned) = match self.cache.get(&plan.base) {
            Some(Stored::Variants(names)) => (variant_key(&plan.base, &parts, &names), true),
            _ => (plan.base.clone(), false),
        };
        if self.warming(&parts) {
            let head = copy_head(&parts);
            let fill = self
                .clone()
                .compute(inner, head, plan.clone(), key.clone(), learned);
            let computed = self
                .cache
                .refresh_async::<Computed<S::Error>, StoreOutcome, _>(key, fill)
                .await;
            self.count(&plan, false);
            return match computed.serve {
                Some(Reply::Page(page)) => Ok(self.respond(&page, &parts, Served::Miss)),
                Some(Reply::Response(r)) => Ok(self.served(r, Served::Miss)),
                Some(Reply::Error(e)) => Err(e),
                None => Ok(self.served(Response::new(Body::empty()), Served::Miss)),
            };
        }
        if let Some(Stored::Page(page)) = self.cache.get(&key) {
            if page.matches(&parts.headers) {
                return Ok(self.serve_stored(&page, &parts, &plan, &key, learned, inner));
            }
        }

        let head = copy_head(&parts);
        let fill = self
            .clone()
            .compute(inner.clone(), head, plan.clone(), key.clone(), learned);
        let computed = self
            .cache
            .resolve_async::<Computed<S::Error>, StoreOutcome, _>(key, None, fill)
            .await;
        match computed.serve {
            Some(Reply::Page(page)) => {
                self.count(&plan, false);
                Ok(self.respond(&page, &parts, Served::Miss))
            }
            Some(Reply::Response(response)) => {
                self.count(&plan, false);
                Ok(self.served(response, Served::Miss))
            }
            Some(Reply::Error(e)) => Err(e),
            // Another request computed it while this one waited.
            None => match computed.store {
                Some(Stored::Page(page)) if page.matches(&parts.headers) => {
                    self.count(&plan, true);
                    Ok(self.respond(&page, &parts, Served::Hit))
                }
                _ => {
                    // The other request learned the URL's variants: look up
                    // this request's own, or compute it alone.
                    let names = match self.cache.get(&plan.base) {
                        Some(Stored::Variants(names)) => names,
                        _ => Arc::from(Vec::new()),
                    };
                    let key = variant_key(&plan.base, &parts, &names);
                    if let Some(Stored::Page(page)) = self.cache.get(&key) {
                        if page.matches(&parts.headers) {
                            self.count(&plan, true);
                            return Ok(self.respond(&page, &parts, Served::Hit));
                        }
                    }
                    let head = copy_head(&parts);
                    let fill = self
                        .clone()
                        .compute(inner, head, plan.clone(), key.clone(), true);
                    let computed = self
                        .cache
                        .refresh_async::<Computed<S::Error>, StoreOutcome, _>(key, fill)
                        .await;
                    self.count(&plan, false);
                    match computed.serve {
                        Some(Reply::Page(page)) => Ok(self.respond(&page, &parts, Served::Miss)),
                        Some(Reply::Response(r)) => Ok(self.served(r, Served::Miss)),
                        Some(Reply::Error(e)) => Err(e),
                        None => Ok(self.served(Response::new(Body::empty()), Served::Miss)),
                    }
                }
            },
        }
    }

    /// Serves a stored page; a stale one is served while one background
    /// request refreshes it.
    fn serve_stored<S>(
        self: &Arc<Self>,
        page: &Page,
        parts: &Parts,
        plan: &Plan,
        key: &str,
        learned: bool,
        inner: S,
    ) -> Response<Body>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let stale = page.fresh_until.is_some_and(|t| SystemTime::now() >= t);
        self.count(plan, true);
        if !stale {
            return self.respond(page, parts, Served::Hit);
        }
        let first = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned());
        if first {
            let policy = Arc::clone(self);
            let head = copy_head(parts);
            let plan = plan.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                let fill = Arc::clone(&policy).compute(inner, head, plan, key.clone(), learned);
                let _ = policy
                    .cache
                    .refresh_async::<Computed<S::Error>, StoreOutcome, _>(key.clone(), fill)
                    .await;
                policy
                    .refreshing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key);
            });
        }
        self.respond(page, parts, Served::Stale)
    }

    /// Runs the handler for a page and decides what is stored. Everything the
    /// handler reads is recorded; so is the page's path.
    async fn compute<S>(
        self: Arc<Self>,
        mut inner: S,
        head: Request<Body>,
        plan: Plan,
        key: String,
        learned: bool,
    ) -> Computed<S::Error>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send,
        S::Future: Send,
    {
        let request_parts = {
            let (parts, _) = copy_head_parts(&head);
            parts
        };
        let (result, read) = record_future(async {
            track_dep(path_dep(&plan.path));
            let response = call(&mut inner, head).await?;
            Ok(self.buffer(response).await)
        })
        .await;
        let (response, body) = match result {
            Ok(Buffered::Whole(response, body)) => (response, body),
            Ok(Buffered::Streamed(response)) => {
                return Computed {
                    store: None,
                    serve: Some(Reply::Response(response)),
                }
            }
            Err(e) => {
                return Computed {
                    store: None,
                    serve: Some(Reply::Error(e)),
                }
            }
        };
        let o = &self.options;
        if refuse_to_store(response.status(), response.headers(), &o.statuses).is_some() {
            let (parts, ()) = response.into_parts();
            return Computed {
                store: None,
                serve: Some(Reply::Response(Response::from_parts(
                    parts,
                    Body::from(body),
                ))),
            };
        }
        let (parts, ()) = response.into_parts();
        let mut response = Response::from_parts(parts, body);
        if let Some(hook) = &o.before_store {
            response = hook(response);
        }
        let (parts, body) = response.into_parts();
        let etag = parts
            .headers
            .get(ETAG)
            .cloned()
            .unwrap_or_else(|| etag_of(&body));
        // The page is already as old as the origin (or a cache before it)
        // says: its `Age` counts from then (RFC 9111 §4.2.3).
        let upstream_age = parts
            .headers
            .get(http::header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let stored_at = SystemTime::now()
            .checked_sub(upstream_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut headers = storable_headers(&parts.headers);
        headers.remove(ETAG);
        let names = vary_names(&headers);
        let mut varied: Vec<(String, String)> = Vec::new();
        for name in names.iter().chain(&o.vary_headers) {
            for value in request_parts.headers.get_all(name) {
                varied.push((
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ));
            }
        }
        let page = Arc::new(Page {
            status: parts.status,
            headers,
            body,
            etag,
            stored_at,
            fresh_until: o
                .timeout
                .filter(|_| o.stale_while_revalidate.is_some())
                .map(|t| stored_at + t),
            url: plan.url.clone(),
            route: plan.route.clone(),
            varied,
            tags: super::page::tags(&read.deps()),
        });
        // What the URL's responses are known to vary on; a response that
        // varies on more widens it (each response is matched against its own
        // Vary when served, so a narrower key never leaks it).
        let known: Option<Arc<[HeaderName]>> = if learned {
            match self.cache.get(&plan.base) {
                Some(Stored::Variants(known)) => Some(known),
                _ => None,
            }
        } else {
            None
        };
        let wider = known
            .as_ref()
            .is_some_and(|k| names.iter().any(|n| !k.contains(n)));
        let store = if wider {
            let mut all: Vec<HeaderName> = known.iter().flat_map(|k| k.iter().cloned()).collect();
            all.extend(names.iter().cloned());
            all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            all.dedup();
            let all: Arc<[HeaderName]> = Arc::from(all);
            let variant = variant_key(&plan.base, &request_parts, &all);
            self.cache
                .insert_recorded(variant, Stored::Page(Arc::clone(&page)), &read);
            self.cache
                .insert_recorded(plan.base.clone(), Stored::Variants(all), &read);
            // Stored above under the wider key; nothing under this one.
            return Computed {
                store: None,
                serve: Some(Reply::Page(page)),
            };
        } else if learned || names.is_empty() {
            Stored::Page(Arc::clone(&page))
        } else {
            // Responses for this URL vary: the page goes under its variant's
            // key, and the URL's key remembers what they vary on.
            let names: Arc<[HeaderName]> = Arc::from(names);
            let variant = variant_key(&plan.base, &request_parts, &names);
            if variant != key {
                self.cache
                    .insert_recorded(variant, Stored::Page(Arc::clone(&page)), &read);
            }
            Stored::Variants(names)
        };
        Computed {
            store: Some(store),
            serve: Some(Reply::Page(page)),
        }
    }

    /// Reads the body into memory, up to the size limit; a larger body is
    /// passed on as a stream, with what was read put back in front.
    async fn buffer(&self, response: Response<Body>) -> Buffered {
        let max = self.options.max_body;
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > max) {
            return Buffered::Streamed(response);
        }
        let (parts, mut body) = response.into_parts();
        let mut buf = BytesMut::new();
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if buf.len() + data.len() > max {
                            buf.extend_from_slice(&data);
                            let head = futures_util::stream::once(async move {
                                Ok::<Bytes, axum::Error>(buf.freeze())
                            });
                            let rest = body.into_data_stream();
                            return Buffered::Streamed(Response::from_parts(
                                parts,
                                Body::from_stream(head.chain(rest)),
                            ));
                        }
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    // A broken body is passed on as it is, never stored.
                    let head = futures_util::stream::iter([
                        Ok::<Bytes, axum::Error>(buf.freeze()),
                        Err(e),
                    ]);
                    return Buffered::Streamed(Response::from_parts(
                        parts,
                        Body::from_stream(head),
                    ));
                }
            }
        }
        Buffered::Whole(Response::from_parts(parts, ()), buf.freeze())
    }
}

enum Buffered {
    Whole(Response<()>, Bytes),
    Streamed(Response<Body>),
}

fn copy_head_parts(request: &Request<Body>) -> (Parts, ()) {
    let mut copy = Request::new(());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy.into_parts()
}

/// The key of the variant of `base` this request asks for.
fn variant_key(base: &str, parts: &Parts, names: &[HeaderName]) -> String {
    let mut key = base.to_owned();
    key.push_str("\nvary");
    push_headers(&mut key, parts, names);
    key
}

/// An unsafe request (POST, PUT, DELETE, PATCH…) that succeeded changed
/// its target: the paths whose stored responses are dropped, its own and
/// the `Location` and `Content-Location` it names on this host (RFC 9111
/// §4.4).
fn written_paths(uri: &http::Uri, host: &str, response: &Response<Body>) -> Vec<crate::dep::Dep> {
    let status = response.status();
    if !(status.is_success() || status.is_redirection()) {
        return Vec::new();
    }
    let mut paths = vec![canonical_path(uri.path())];
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(target) = response
            .headers()
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<http::Uri>().ok())
        else {
            continue;
        };
        // Only this site's URLs: another host's pages are not ours to drop.
        let same_host = target
            .authority()
            .is_none_or(|a| a.as_str().eq_ignore_ascii_case(host));
        if same_host && target.path().starts_with('/') {
            paths.push(canonical_path(target.path()));
        }
    }
    paths.iter().map(|p| path_dep(p)).collect()
}

/// Tells the purgers which URL an invalidation dropped.
#[cfg(feature = "purge")]
fn page_dropped(_key: &String, stored: &Stored) {
    if let Stored::Page(page) = stored {
        crate::purge::enqueue(crate::purge::PurgeRequest::Url {
            path: page.url.clone(),
            headers: page.varied.clone(),
        });
    }
}

/// Every response cache in use, for finding and purging URLs.
static POLICIES: Mutex<Vec<Weak<Policy>>> = Mutex::new(Vec::new());

pub(crate) fn register(policy: &Arc<Policy>) {
    let mut all = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|p| p.strong_count() > 0);
    all.push(Arc::downgrade(policy));
}

pub(crate) fn policies() -> Vec<Arc<Policy>> {
    let all = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter().filter_map(Weak::upgrade).collect()
}
