//! Running the handler for a page: recording what it reads, buffering the
//! body, and deciding what is stored.

use super::*;

/// How old the origin (or a cache before it) says a response already is:
/// its `Age` counts from then (RFC 9111 §4.2.3).
fn upstream_age(headers: &http::HeaderMap) -> Duration {
    headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// What a computation of a page leaves: what to store (under the key it was
/// computed for) and what to send back.
pub(super) struct Computed<E> {
    pub(super) store: Option<Stored>,
    pub(super) serve: Option<Reply<E>>,
}

pub(super) enum Reply<E> {
    Page(Arc<Page>),
    Response(Response<Body>),
    Error(E),
}

/// Stores `Computed::store`; a hit comes back as `Computed` with no reply.
pub(super) struct StoreOutcome;

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
    /// A server error, a timeout or a handler's error: what
    /// `stale_if_error` answers. (A 408 is a timeout layer's answer for a
    /// handler that took too long, `tower_http::timeout`'s default.)
    fn failed(result: &Computed<E>) -> bool {
        match &result.serve {
            Some(Reply::Error(_)) => true,
            Some(Reply::Response(r)) => {
                r.status().is_server_error() || r.status() == http::StatusCode::REQUEST_TIMEOUT
            }
            _ => false,
        }
    }
}

pub(super) enum Buffered {
    Whole(Response<()>, Bytes),
    Streamed(Response<Body>),
}

impl Policy {
    /// Runs the handler for a page and decides what is stored. Everything the
    /// handler reads is recorded; so is the page's path. With freshness from
    /// the response, `stale` is the stored page to revalidate: the request
    /// carries its validators and a 304 updates it.
    pub(super) async fn compute<S>(
        self: Arc<Self>,
        mut inner: S,
        mut head: Request<Body>,
        plan: Plan,
        key: String,
        learned: bool,
        stale: Option<Arc<Page>>,
    ) -> Computed<S::Error>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send,
        S::Future: Send,
    {
        let o = &self.options;
        if o.from_response {
            freshness::strip_conditions(head.headers_mut());
            let (name, value) = freshness::SURROGATE_CAPABILITY;
            head.headers_mut().insert(name, value);
            if let Some(stale) = &stale {
                freshness::add_validators(head.headers_mut(), &stale.headers);
            }
        }
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
        let built = if o.from_response {
            self.page_from_response(response, body, &request_parts, stale.as_deref())
        } else {
            self.page_from_handler(response, body)
        };
        let mut page = match built {
            Ok(page) => page,
            Err(response) => {
                return Computed {
                    store: None,
                    serve: Some(Reply::Response(*response)),
                }
            }
        };
        let names = vary_names(&page.headers);
        for name in names.iter().chain(&o.vary_headers) {
            for value in request_parts.headers.get_all(name) {
                page.varied.push((
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ));
            }
        }
        // The host it was asked under: a proxy keys its copy on it, and a
        // purge by URL must name it.
        if !page.varied.iter().any(|(n, _)| n == "host") {
            let host = request_parts
                .headers
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                .or_else(|| request_parts.uri.authority().map(|a| a.to_string()));
            if let Some(host) = host {
                page.varied.push(("host".to_owned(), host));
            }
        }
        page.url.clone_from(&plan.url);
        page.route.clone_from(&plan.route);
        page.tags = crate::http::page::tags(&read.deps());
        let page = Arc::new(page);
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

    /// The page to store from the app's response, kept for the layer's
    /// timeout, or the response to pass on unstored.
    fn page_from_handler(
        &self,
        response: Response<()>,
        body: Bytes,
    ) -> Result<Page, Box<Response<Body>>> {
        let o = &self.options;
        if refuse_to_store(response.status(), response.headers(), &o.statuses).is_some() {
            let (parts, ()) = response.into_parts();
            return Err(Box::new(Response::from_parts(parts, Body::from(body))));
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
        let mut headers = storable_headers(&parts.headers);
        headers.remove(ETAG);
        let stored_at = SystemTime::now()
            .checked_sub(upstream_age(&parts.headers))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Page {
            status: parts.status,
            headers,
            body,
            etag: Some(etag),
            stored_at,
            fresh_until: o
                .timeout
                .filter(|_| o.stale_while_revalidate.is_some() || o.stale_if_error.is_some())
                .map(|t| stored_at + t),
            url: String::new(),
            route: None,
            varied: Vec::new(),
            tags: String::new(),
            policy: None,
        })
    }

    /// The page to store from an origin's response, kept as its own headers
    /// say (a 304 answering `stale` updates that page), or the response to
    /// pass on unstored.
    fn page_from_response(
        &self,
        response: Response<()>,
        body: Bytes,
        request: &Parts,
        stale: Option<&Page>,
    ) -> Result<Page, Box<Response<Body>>> {
        let now = SystemTime::now();
        let (parts, ()) = response.into_parts();
        let (status, headers, body) = match stale {
            // The 304 answers the request that carried this page's validators
            // alone: the page is current (even when the 304 spells the ETag
            // differently, as compressing servers do).
            Some(stale) if parts.status == StatusCode::NOT_MODIFIED => {
                let mut headers = freshness::updated_headers(&stale.headers, &parts.headers);
                if let Some(age) = parts.headers.get(http::header::AGE) {
                    headers.insert(http::header::AGE, age.clone());
                }
                (stale.status, headers, stale.body.clone())
            }
            _ if parts.status == StatusCode::NOT_MODIFIED => {
                return Err(Box::new(Response::from_parts(parts, Body::from(body))));
            }
            _ => (parts.status, parts.headers.clone(), body),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        if let Some(hook) = &self.options.before_store {
            response = hook(response);
        }
        let policy = freshness::policy(request, response.status(), response.headers(), now);
        if response.headers().contains_key(SET_COOKIE)
            || !freshness::worth_storing(&policy, response.headers(), now)
        {
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(freshness::SURROGATE_CONTROL);
            return Err(Box::new(Response::from_parts(parts, Body::from(body))));
        }
        let (parts, body) = response.into_parts();
        let stored_at = now
            .checked_sub(policy.age(now))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Page {
            status: parts.status,
            headers: storable_headers(&parts.headers),
            body,
            etag: parts.headers.get(ETAG).cloned(),
            stored_at,
            fresh_until: None,
            url: String::new(),
            route: None,
            varied: Vec::new(),
            tags: String::new(),
            policy: Some(Box::new(policy)),
        })
    }

    /// Reads the body into memory, up to the size limit; a larger body is
    /// passed on as a stream, with what was read put back in front.
    pub(super) async fn buffer(&self, response: Response<Body>) -> Buffered {
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
