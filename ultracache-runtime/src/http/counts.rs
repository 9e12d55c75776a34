//! Hits and misses per URL and per route, bounded in bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

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
