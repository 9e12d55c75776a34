//! A request's way through the cache: hit, stale, wait for a fill, or
//! compute; and what a write through the layer drops (RFC 9111 §4.4).

use super::*;

/// An unsafe request (POST, PUT, DELETE, PATCH…) that succeeded changed
/// its target: the paths whose stored responses are dropped, its own and
/// the `Location` and `Content-Location` it names on this host (RFC 9111
/// §4.4).
pub(super) fn written_paths(
    uri: &http::Uri,
    host: &str,
    response: &Response<Body>,
) -> Vec<crate::dep::Dep> {
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

impl Policy {
    pub(super) async fn handle<S>(
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
            return self.refill(inner, &parts, &plan, key, learned, None).await;
        }
        if let Some(Stored::Page(page)) = self.cache.get(&key) {
            if page.matches(&parts.headers) {
                let usable = page.policy.as_deref().map_or(Use::Fresh, |policy| {
                    freshness::usable(policy, &page.headers, &parts, SystemTime::now())
                });
                match usable {
                    Use::Fresh => {
                        return Ok(self.serve_stored(&page, &parts, &plan, &key, learned, inner));
                    }
                    _ if parts.method == Method::HEAD => {
                        return self.pass_head(inner, parts, body).await;
                    }
                    Use::Revalidate => {
                        let stale = Some(page);
                        return self.refill(inner, &parts, &plan, key, learned, stale).await;
                    }
                    Use::Refetch => {
                        return self.refill(inner, &parts, &plan, key, learned, None).await;
                    }
                }
            }
        }
        if self.options.from_response && parts.method == Method::HEAD {
            return self.pass_head(inner, parts, body).await;
        }

        let head = copy_head(&parts);
        let fill = self.clone().compute(
            inner.clone(),
            head,
            plan.clone(),
            key.clone(),
            learned,
            None,
        );
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
                    // Past its fresh period: a page kept for its grace,
                    // answering a failed computation.
                    let served = if page.fresh_until.is_some_and(|t| SystemTime::now() >= t) {
                        Served::Stale
                    } else {
                        Served::Hit
                    };
                    Ok(self.respond(&page, &parts, served))
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
                    self.refill(inner, &parts, &plan, key, true, None).await
                }
            },
        }
    }

    /// Computes the page again and stores it in place of what is there
    /// (with `stale`: revalidates that page).
    async fn refill<S>(
        self: &Arc<Self>,
        inner: S,
        parts: &Parts,
        plan: &Plan,
        key: String,
        learned: bool,
        stale: Option<Arc<Page>>,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let head = copy_head(parts);
        let fill = Arc::clone(self).compute(inner, head, plan.clone(), key.clone(), learned, stale);
        let computed = self
            .cache
            .refresh_async::<Computed<S::Error>, StoreOutcome, _>(key, fill)
            .await;
        self.count(plan, false);
        match computed.serve {
            Some(Reply::Page(page)) => Ok(self.respond(&page, parts, Served::Miss)),
            Some(Reply::Response(r)) => Ok(self.served(r, Served::Miss)),
            Some(Reply::Error(e)) => Err(e),
            None => Ok(self.served(Response::new(Body::empty()), Served::Miss)),
        }
    }

    /// A HEAD the cache cannot answer goes to the origin as a HEAD; what
    /// comes back (no body) is never stored.
    async fn pass_head<S>(
        &self,
        mut inner: S,
        parts: Parts,
        body: Body,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Service<Request<Body>, Response = Response<Body>>,
    {
        let mut response = call(&mut inner, Request::from_parts(parts, body)).await?;
        response.headers_mut().remove(freshness::SURROGATE_CONTROL);
        Ok(self.served(response, Served::Miss))
    }

    /// Serves a stored page; a stale one is served while one background
    /// request refreshes it.
    pub(super) fn serve_stored<S>(
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
                let fill =
                    Arc::clone(&policy).compute(inner, head, plan, key.clone(), learned, None);
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
}
