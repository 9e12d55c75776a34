//! A layer's policy: what a request's key is, whether it may use the
//! cache, and how a stored page is answered; every response cache in use.

use super::*;

/// What a request may do with the cache.
pub(super) enum Decision {
    /// Pass through; with `no_cache`, tell clients not to cache either.
    Bypass {
        no_cache: bool,
    },
    Cache(Plan),
}

/// Where a cacheable request's page lives.
#[derive(Clone)]
pub(super) struct Plan {
    /// The key before the response's `Vary` is known.
    pub(super) base: String,
    /// Path and normalized query.
    pub(super) url: String,
    pub(super) path: String,
    pub(super) route: Option<String>,
}

pub(crate) struct Policy {
    pub(super) options: Options,
    pub(crate) cache: Cache<String, Stored>,
    pub(super) refreshing: Mutex<HashSet<String>>,
}

/// The key of the variant of `base` this request asks for.
pub(super) fn variant_key(base: &str, parts: &Parts, names: &[HeaderName]) -> String {
    let mut key = base.to_owned();
    key.push_str("\nvary");
    push_headers(&mut key, parts, names);
    key
}

/// Tells the purgers which URL an invalidation dropped.
#[cfg(feature = "purge")]
pub(super) fn page_dropped(_key: &String, stored: &Stored) {
    if let Stored::Page(page) = stored {
        crate::purge::enqueue(crate::purge::PurgeRequest::Url {
            path: page.url.clone(),
            headers: page.varied.clone(),
        });
    }
}

/// Every response cache in use, for finding and purging URLs.
pub(super) static POLICIES: Mutex<Vec<Weak<Policy>>> = Mutex::new(Vec::new());

pub(crate) fn register(policy: &Arc<Policy>) {
    let mut all = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|p| p.strong_count() > 0);
    all.push(Arc::downgrade(policy));
}

pub(crate) fn policies() -> Vec<Arc<Policy>> {
    let all = POLICIES.lock().unwrap_or_else(PoisonError::into_inner);
    all.iter().filter_map(Weak::upgrade).collect()
}

impl Policy {
    pub(super) fn decide(&self, parts: &Parts) -> Decision {
        let o = &self.options;
        let bypass = Decision::Bypass { no_cache: false };
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return bypass;
        }
        if o.timeout == Some(Duration::ZERO) {
            return Decision::Bypass { no_cache: true };
        }
        if o.from_response && freshness::passes_through(parts) {
            return bypass;
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
            push_cookie(&mut base, parts, name);
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
    pub(super) fn warming(&self, parts: &Parts) -> bool {
        let Some(token) = &self.options.warm_token else {
            return false;
        };
        parts
            .headers
            .get("x-ultracache-warm")
            .is_some_and(|v| v.as_bytes() == token.as_bytes())
    }

    pub(super) fn served(&self, mut response: Response<Body>, served: Served) -> Response<Body> {
        mark(response.headers_mut(), served);
        if let Some(hook) = &self.options.on_serve {
            hook(&mut response);
        }
        response
    }

    pub(super) fn respond(&self, page: &Page, parts: &Parts, served: Served) -> Response<Body> {
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

    pub(super) fn count(&self, plan: &Plan, hit: bool) {
        let count = |c: Arc<Counts>| if hit { c.hit() } else { c.miss() };
        count(STATS.url(&plan.url));
        if let Some(route) = &plan.route {
            count(STATS.route(route));
        }
    }
}
