//! The URL registry and statistics: every response cache is listed here, so
//! cached URLs can be found and purged by pattern, and hits and misses are
//! counted per URL and per route.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::key::glob_match;
use super::layer::Policy;
use super::page::Stored;
use crate::invalidation::invalidate_paths;

static POLICIES: Mutex<Vec<Weak<Policy>>> = Mutex::new(Vec::new());

pub(crate) fn register(policy: &Arc<Policy>) {
    let mut all = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|p| p.strong_count() > 0);
    all.push(Arc::downgrade(policy));
}

fn policies() -> Vec<Arc<Policy>> {
    let all = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter().filter_map(Weak::upgrade).collect()
}

/// A cached URL, as [`find_urls`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CachedUrl {
    /// The path and normalized query (`/posts?page=2`).
    pub url: String,
    /// The path alone.
    pub path: String,
    /// The cache key (URL plus the varied request headers, one line each).
    pub key: String,
    /// The route that produced it (axum's matched path), when known.
    pub route: Option<String>,
    /// The response status.
    pub status: u16,
    /// Time until the server drops it; `None` for never.
    pub expires_in: Option<Duration>,
    /// How long ago it was stored.
    pub age: Duration,
    /// What it was computed from (`blog.post:42`, `blog.post`, its path).
    pub dependencies: Vec<String>,
}

/// Lists the cached URLs whose path matches one of `patterns` (`*` matches
/// any run of characters; a pattern without `*` matches one path exactly).
/// Paths and patterns are compared in canonical form: `/x/hell%6F` is
/// `/x/hello`.
/// Every variant of a URL is listed. Expired entries are not reported, and are
/// removed.
pub fn find_urls<S: AsRef<str>>(patterns: &[S]) -> Vec<CachedUrl> {
    // Paths are kept canonical (`/x/hell%6F` is `/x/hello`): so are patterns.
    let patterns: Vec<String> = patterns
        .iter()
        .map(|p| crate::paths::canonical_path(p.as_ref()))
        .collect();
    let mut out = Vec::new();
    for policy in policies() {
        for entry in policy.cache.entries() {
            let Stored::Page(page) = &entry.value else {
                continue;
            };
            let path = page.url.split('?').next().unwrap_or_default();
            if patterns.iter().any(|p| glob_match(p, path)) {
                out.push(CachedUrl {
                    url: page.url.clone(),
                    path: path.to_owned(),
                    key: entry.key.clone(),
                    route: page.route.clone(),
                    status: page.status.as_u16(),
                    expires_in: entry.expires_in,
                    age: std::time::SystemTime::now()
                        .duration_since(page.stored_at)
                        .unwrap_or_default(),
                    dependencies: entry.dependencies.iter().map(ToString::to_string).collect(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Drops the cached responses of every path matching one of `patterns`:
/// every method and variant, and whatever cached computation nested them.
/// A response being computed for such a path when this runs is not stored.
/// Returns the URLs that were cached.
pub fn purge_urls<S: AsRef<str>>(patterns: &[S]) -> Vec<CachedUrl> {
    let found = find_urls(patterns);
    let mut paths: Vec<&str> = found.iter().map(|u| u.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    // Exact patterns purge their path even when nothing is cached yet: a first
    // fill running now must not be stored.
    let exact = patterns
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| !p.contains('*'));
    invalidate_paths(paths.into_iter().chain(exact));
    found
}

/// Hits and misses of one URL or route.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Counts {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }
}

/// Statistics of one URL or route; see [`url_stats`] and [`route_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct UrlStats {
    /// The URL (path and normalized query) or the route.
    pub name: String,
    /// Requests answered from the cache (fresh or stale).
    pub hits: u64,
    /// Requests that ran the handler.
    pub misses: u64,
}

/// URLs counted take at most this many bytes (their text and counters); the
/// least used go first. Long URLs are no way to grow the process.
const MAX_URL_BYTES: u64 = 4 << 20;

pub(crate) struct Stats {
    urls: moka::sync::Cache<String, Arc<Counts>>,
    routes: Mutex<BTreeMap<String, Arc<Counts>>>,
}

pub(crate) static STATS: std::sync::LazyLock<Stats> = std::sync::LazyLock::new(|| Stats {
    urls: moka::sync::Cache::builder()
        .max_capacity(MAX_URL_BYTES)
        .weigher(|url: &String, _| u32::try_from(url.len() + 64).unwrap_or(u32::MAX))
        .build(),
    routes: Mutex::new(BTreeMap::new()),
});

impl Stats {
    pub(crate) fn url(&self, url: &str) -> Arc<Counts> {
        self.urls
            .get_with_by_ref(url, || Arc::new(Counts::default()))
    }

    pub(crate) fn route(&self, route: &str) -> Arc<Counts> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(routes.entry(route.to_owned()).or_default())
    }
}

fn snapshot(name: &str, c: &Counts) -> UrlStats {
    UrlStats {
        name: name.to_owned(),
        hits: c.hits.load(Relaxed),
        misses: c.misses.load(Relaxed),
    }
}

/// Hits and misses per URL (path and normalized query: with a query
/// allow-list, `?page=2&junk=1` counts as `?page=2`), most recent 10,000 URLs.
pub fn url_stats() -> Vec<UrlStats> {
    let mut out: Vec<UrlStats> = STATS
        .urls
        .iter()
        .map(|(name, c)| snapshot(&name, &c))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Hits and misses per route (axum's matched path, such as `/posts/{slug}`).
pub fn route_stats() -> Vec<UrlStats> {
    let routes = STATS.routes.lock().unwrap_or_else(PoisonError::into_inner);
    routes.iter().map(|(name, c)| snapshot(name, c)).collect()
}
