//! Freshness from the response (`CacheLayer::freshness_from_response`): the
//! layer acts as a shared HTTP cache (RFC 9111). Whether a response may be
//! stored, how long it is fresh (`s-maxage`, `max-age`, `Expires`, the
//! `Last-Modified` heuristic) and whether a request may take it without
//! asking the origin come from `http-cache-semantics`; this module adds what
//! that crate leaves to its user: `Surrogate-Control`, the conditional
//! request that revalidates a stale page, and updating the page from a 304.

use http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE, VARY,
};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};
use std::time::{Duration, SystemTime};

/// The header a reverse proxy's origin uses to speak to the proxy alone
/// (Edge Architecture Specification); it overrides `Cache-Control` here and
/// is never passed on.
pub(crate) const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// The policy for a response to `request`, received at `now`.
pub(crate) fn policy(
    request: &Parts,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> CachePolicy {
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    let fields = response.headers_mut();
    *fields = headers.clone();
    // `Surrogate-Control` speaks to this cache: its directives replace
    // `Cache-Control` for deciding freshness here (clients still get the
    // origin's `Cache-Control`).
    if let Some(directives) = surrogate_directives(headers) {
        fields.remove(CACHE_CONTROL);
        if let Ok(value) = HeaderValue::from_str(&directives) {
            fields.insert(CACHE_CONTROL, value);
        }
    }
    // Directive names are case-insensitive (RFC 9111 §5.2).
    let directives: Vec<HeaderValue> = fields
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| HeaderValue::from_bytes(&v.as_bytes().to_ascii_lowercase()).ok())
        .collect();
    fields.remove(CACHE_CONTROL);
    for value in directives {
        fields.append(CACHE_CONTROL, value);
    }
    // An `Age` that is not one whole number of seconds is read as the
    // largest age (RFC 9111 §1.2.2): a response it came with is stale, never
    // fresher than it is.
    if let Some(age) = read_age(headers) {
        fields.insert(http::header::AGE, HeaderValue::from(age));
    }
    CachePolicy::new_options(&kept_request(request, headers), &response, now, options())
}

/// The largest age a cache needs to represent (RFC 9111 §1.2.2).
const GREATEST_AGE: u64 = 2_147_483_648;

/// The response's `Age` in seconds: `None` without one; the greatest age
/// for one that is not exactly one non-negative integer.
fn read_age(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(http::header::AGE).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(GREATEST_AGE);
    }
    let text = first.as_bytes().trim_ascii();
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Some(GREATEST_AGE);
    }
    Some(
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(GREATEST_AGE, |a| a.min(GREATEST_AGE)),
    )
}

/// This cache's name in `Surrogate-Capability` and in targeted
/// `Surrogate-Control` directives (`max-age=60;ultracache`).
pub(crate) const SURROGATE_NAME: &str = "ultracache";

/// What the fill request says this cache understands (Edge Architecture
/// Specification §2.1).
pub(crate) const SURROGATE_CAPABILITY: (HeaderName, HeaderValue) = (
    HeaderName::from_static("surrogate-capability"),
    HeaderValue::from_static("ultracache=\"Surrogate/1.0\""),
);

/// The `Surrogate-Control` directives meant for this cache, as one
/// `Cache-Control` value: those targeted at it (`;ultracache`) if any,
/// else the untargeted ones. `None` without the header.
fn surrogate_directives(headers: &HeaderMap) -> Option<String> {
    let mut any = false;
    let mut targeted = Vec::new();
    let mut general = Vec::new();
    for value in headers.get_all(SURROGATE_CONTROL) {
        any = true;
        let text = String::from_utf8_lossy(value.as_bytes());
        for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once(';') {
                Some((d, target)) if target.trim().eq_ignore_ascii_case(SURROGATE_NAME) => {
                    targeted.push(d.trim().to_owned());
                }
                Some(_) => {}
                None => general.push(directive.to_owned()),
            }
        }
    }
    any.then(|| {
        if targeted.is_empty() {
            general.join(", ")
        } else {
            targeted.join(", ")
        }
    })
}

/// What the policy keeps of the request: what decides reuse (host, the
/// request's own cache directives, the headers the response varies on) and
/// whether it carried credentials, never their value.
fn kept_request(request: &Parts, response: &HeaderMap) -> Parts {
    let mut kept = http::Request::new(());
    *kept.method_mut() = request.method.clone();
    *kept.uri_mut() = request.uri.clone();
    let headers = kept.headers_mut();
    for name in [http::header::HOST, CACHE_CONTROL, http::header::PRAGMA] {
        for value in request.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if request.headers.contains_key(http::header::AUTHORIZATION) {
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("present"),
        );
    }
    for name in vary_names(response) {
        for value in request.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    kept.into_parts().0
}

/// The request headers a response varies on (lower-case names).
pub(crate) fn vary_names(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// Whether a response with this policy is worth storing: storable, and
/// either fresh for a while or carrying a validator to revalidate with.
pub(crate) fn worth_storing(policy: &CachePolicy, headers: &HeaderMap, now: SystemTime) -> bool {
    policy.is_storable()
        && (policy.time_to_live(now) > Duration::ZERO
            || headers.contains_key(ETAG)
            || headers.contains_key(LAST_MODIFIED))
}

/// What a request may do with a stored page.
pub(crate) enum Use {
    /// Serve it as it is.
    Fresh,
    /// Ask the origin whether it changed (a conditional request).
    Revalidate,
    /// It does not answer this request: fetch a new response.
    Refetch,
}

/// A request as the stored response's policy sees it: its URL is the one
/// the response was stored for (the layer's key, built from the decoded,
/// canonical URL, already decided that), and a HEAD may take a stored GET
/// response (RFC 9110 §9.3.2).
struct Presented<'a>(&'a Parts);

impl http_cache_semantics::RequestLike for Presented<'_> {
    fn uri(&self) -> http::Uri {
        self.0.uri.clone()
    }
    fn is_same_uri(&self, _: &http::Uri) -> bool {
        true
    }
    fn method(&self) -> &http::Method {
        if self.0.method == http::Method::HEAD {
            &http::Method::GET
        } else {
            &self.0.method
        }
    }
    fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }
}

/// What `request` may do with a stored response (`stored`: its headers).
pub(crate) fn usable(
    policy: &CachePolicy,
    stored: &HeaderMap,
    request: &Parts,
    now: SystemTime,
) -> Use {
    match policy.before_request(&Presented(request), now) {
        BeforeRequest::Fresh(_) => Use::Fresh,
        BeforeRequest::Stale { matches: true, .. }
            if stored.contains_key(ETAG) || stored.contains_key(LAST_MODIFIED) =>
        {
            Use::Revalidate
        }
        BeforeRequest::Stale { .. } => Use::Refetch,
    }
}

/// The client's own conditions: the cache answers them itself from the
/// response it gets or has, so the origin is asked for the whole response.
pub(crate) fn strip_conditions(headers: &mut HeaderMap) {
    for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_RANGE] {
        headers.remove(name);
    }
}

/// Whether the request asks for part of the resource, or sets a
/// precondition this cache does not evaluate: such requests go to the origin.
pub(crate) fn passes_through(parts: &Parts) -> bool {
    parts.headers.contains_key(RANGE)
        || parts.headers.contains_key(IF_MATCH)
        || parts.headers.contains_key(IF_UNMODIFIED_SINCE)
}

/// Makes `headers` a request that revalidates a stored response: its
/// validators as `If-None-Match` and `If-Modified-Since`.
pub(crate) fn add_validators(headers: &mut HeaderMap, stored: &HeaderMap) {
    strip_conditions(headers);
    if let Some(etag) = stored.get(ETAG) {
        headers.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.get(LAST_MODIFIED) {
        headers.insert(IF_MODIFIED_SINCE, modified.clone());
    }
}

/// Headers a 304 never replaces in the stored response: they describe the
/// stored body (the validator it is served with, its length, coding and
/// checksum) or the connection.
fn kept_on_update(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "etag"
            | "content-md5"
            | "content-encoding"
            | "transfer-encoding"
            | "content-range"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// The stored headers updated with those of a 304 (RFC 9111 §3.2): every
/// field the 304 carries replaces all stored instances of it.
pub(crate) fn updated_headers(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut headers = stored.clone();
    for name in not_modified.keys() {
        if kept_on_update(name) || name == http::header::AGE {
            continue;
        }
        headers.remove(name);
        for value in not_modified.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Whether the client's `If-Modified-Since` holds for a stored response, so
/// it gets a 304 (RFC 9110 §13.2.2): only without `If-None-Match`, which
/// is decided by the ETag alone.
pub(crate) fn unmodified_since(stored: &HeaderMap, request: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        return false;
    }
    let date = |v: Option<&HeaderValue>| {
        v.and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (
        date(request.get(IF_MODIFIED_SINCE)),
        date(stored.get(LAST_MODIFIED)),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}
