//! Finding and purging cached URLs by pattern, across every response cache.

use std::time::Duration;

use super::key::glob_match;
use super::layer::policies;
use super::page::Stored;
use crate::invalidation::invalidate_paths;

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
