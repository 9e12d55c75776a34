//! Reading stored pages from outside the app: what `ultracache proxy` uses to
//! serve pages straight from the shared Redis tier.

use axum::body::Body;
use http::request::Parts;
use http::{HeaderValue, Response};
use std::time::{Duration, SystemTime};

use super::key::{default_key, request_url, QueryParams};
use super::page::{ClientCaching, Served, Stored};
use crate::cache::Cache;
use crate::names::intern;

/// Reads the pages a [`CacheLayer::shared`](super::CacheLayer::shared) named
/// `name` stored, from any process configured with the same Redis tier and
/// prefix. Pages keyed with the layer's defaults (path and full query) are
/// found; layers with custom keys or query lists are not.
#[derive(Debug)]
pub struct PageReader {
    cache: Cache<String, Stored>,
}

/// How long this process keeps a page it read before asking Redis again:
/// Redis expires pages on the app's timeout, invalidations arrive over
/// pub/sub.
const LOCAL_COPY: Duration = Duration::from_secs(10);

impl PageReader {
    /// A reader for the layer named `name` (`"http"` unless it was renamed).
    pub fn new(name: &str) -> Self {
        PageReader {
            cache: Cache::new(intern(name))
                .timeout(LOCAL_COPY)
                .weigher(super::page::weigh)
                .key_weigher(|key: &String| key.capacity())
                .shared(),
        }
    }

    /// The stored response for this request, marked with `header: value`,
    /// and whether its fresh period is over (the origin should regenerate
    /// it). `None`: not stored.
    pub async fn lookup(
        &self,
        parts: &Parts,
        header: &'static str,
    ) -> Option<(Response<Body>, bool)> {
        let (_, url) = request_url(parts, &QueryParams::All);
        let base = default_key(parts, &url);
        let page = match self.cache.fetch(&base).await? {
            Stored::Page(page) if page.matches(&parts.headers) => page,
            Stored::Page(_) => return None,
            Stored::Variants(names) => {
                let mut key = base.clone();
                key.push_str("\nvary");
                super::key::push_headers(&mut key, parts, &names);
                match self.cache.fetch(&key).await? {
                    Stored::Page(page) if page.matches(&parts.headers) => page,
                    _ => return None,
                }
            }
        };
        let stale = page.fresh_until.is_some_and(|t| SystemTime::now() >= t);
        let served = if stale { Served::Stale } else { Served::Hit };
        let mut response = page.respond(
            &parts.method,
            &parts.headers,
            served,
            ClientCaching::Untouched,
            None,
            None,
            None,
        );
        response.headers_mut().insert(
            header,
            HeaderValue::from_static(if stale { "stale" } else { "hit" }),
        );
        Some((response, stale))
    }
}
