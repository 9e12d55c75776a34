//! Stored responses: what may be stored, what is kept, and how a stored page
//! is served (Age, ETag and 304, HEAD, the headers clients are given).

use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, AGE, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, ETAG, EXPIRES,
    IF_NONE_MATCH, SET_COOKIE, TRANSFER_ENCODING, VARY,
};
use http::{HeaderMap, Method, Response, StatusCode};

/// The response header that says how a response was served.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What the response cache keeps under one key (public only so that a
/// proxy can read pages from the shared tier; see [`PageReader`](super::PageReader)).
#[derive(Clone, Debug)]
pub enum Stored {
    /// The request headers the responses for this URL vary on; the pages are
    /// stored under keys that include their values.
    Variants(Arc<[HeaderName]>),
    /// A page.
    Page(Arc<Page>),
}

/// What a stored value holds in memory: for a page, its body, headers, URL,
/// varied headers and surrogate keys. (The key, which holds the URL again,
/// is weighed by the cache's key weigher.)
pub(crate) fn weigh(stored: &Stored) -> usize {
    const PER_FIELD: usize = 32;
    match stored {
        Stored::Variants(names) => names.iter().map(|n| n.as_str().len() + PER_FIELD).sum(),
        Stored::Page(page) => {
            let headers: usize = page
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + PER_FIELD)
                .sum();
            let varied: usize = page
                .varied
                .iter()
                .map(|(n, v)| n.len() + v.len() + PER_FIELD)
                .sum();
            // A response-freshness page also holds its policy: the response
            // headers again and the few request headers it was built from.
            let policy = page.policy.as_ref().map_or(0, |_| headers + 256);
            size_of::<Page>()
                + page.body.len()
                + policy
                + headers
                + page.url.len()
                + page.route.as_ref().map_or(0, String::len)
                + varied
                + page.tags.len()
        }
    }
}

/// A stored response.
#[derive(Debug)]
pub struct Page {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The validator served with the page: the origin's, or one from the
    /// body's bytes; none for a response kept as the origin sent it.
    pub(crate) etag: Option<HeaderValue>,
    pub(crate) stored_at: SystemTime,
    /// Past this, the page is stale (served while it is refreshed).
    pub(crate) fresh_until: Option<SystemTime>,
    /// The request's path and normalized query.
    pub(crate) url: String,
    pub(crate) route: Option<String>,
    /// The request headers the page varied on (for purging proxies).
    pub(crate) varied: Vec<(String, String)>,
    /// Its surrogate keys: its dependencies, and `kind:*` for each kind of
    /// object among them.
    pub(crate) tags: String,
    /// With freshness from the response: when the page may be served
    /// without asking the origin, and its age.
    pub(crate) policy: Option<Box<http_cache_semantics::CachePolicy>>,
}

/// Surrogate keys for a page computed from `deps`.
pub(crate) fn tags(deps: &[crate::dep::Dep]) -> String {
    let mut tags: Vec<String> = deps.iter().map(ToString::to_string).collect();
    let mut kinds: Vec<String> = deps
        .iter()
        .filter(|d| d.id_key().is_some())
        .map(|d| format!("{}:*", d.model_kind().name()))
        .collect();
    kinds.sort();
    kinds.dedup();
    tags.extend(kinds);
    tags.join(" ")
}

/// How a response was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Served {
    Hit,
    Miss,
    Stale,
}

impl Served {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Served::Hit => "HIT",
            Served::Miss => "MISS",
            Served::Stale => "STALE",
        })
    }
}

/// Why a response is not stored, if it is not.
pub(crate) fn refuse_to_store(
    status: StatusCode,
    headers: &HeaderMap,
    statuses: &[StatusCode],
) -> Option<&'static str> {
    if !statuses.contains(&status) {
        return Some("status");
    }
    if headers.contains_key(SET_COOKIE) {
        return Some("set-cookie");
    }
    // Read as bytes: a stray non-ASCII byte elsewhere in the field must not
    // hide `private` (RFC 9111 §5.2: directives are tokens; unknown ones are
    // ignored, known ones still count).
    let mut lifetime = false;
    for value in headers.get_all(CACHE_CONTROL) {
        let value = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        for directive in value.split(',').map(str::trim) {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if matches!(name, "private" | "no-store" | "no-cache") {
                return Some("cache-control");
            }
            // This layer is a shared cache: `s-maxage` is its lifetime, and
            // zero (or a negative or unreadable one) means "do not keep".
            if matches!(name, "max-age" | "s-maxage") {
                if arg.is_none_or(|a| a.parse::<u64>().map_or(true, |n| n == 0)) {
                    return Some("max-age=0");
                }
                lifetime = true;
            }
        }
    }
    // Expires counts only without max-age or s-maxage (RFC 9111 §5.3).
    if let Some(expires) = headers.get(EXPIRES).filter(|_| !lifetime) {
        // An unparsable Expires means "already expired" (RFC 9111 §5.3).
        let past = expires
            .to_str()
            .ok()
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_none_or(|t| t <= SystemTime::now());
        if past {
            return Some("expires");
        }
    }
    // `Vary: *` anywhere in the list: no request can match it (§4.1).
    if headers
        .get_all(VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|n| n.trim_ascii() == b"*")
    {
        return Some("vary-*");
    }
    None
}

pub(crate) use super::freshness::vary_names;

/// A strong validator from the body's bytes (FNV-1a, 64 bits).
pub(crate) fn etag_of(body: &[u8]) -> HeaderValue {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    HeaderValue::from_str(&format!("\"{h:016x}-{}\"", body.len()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Headers that describe the connection, not the response: never stored.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || matches!(
            name.as_str(),
            "keep-alive" | "proxy-connection" | "te" | "trailer" | "upgrade"
        )
}

/// The headers worth keeping from a response about to be stored.
pub(crate) fn storable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !hop_by_hop(name) && name != AGE && name != X_CACHE {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Whether `If-None-Match` names this ETag (or `*`).
pub(crate) fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    let bare = etag.strip_prefix(b"W/").unwrap_or(etag);
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| {
            tag == "*" || {
                let tag = tag.as_bytes();
                tag.strip_prefix(b"W/").unwrap_or(tag) == bare
            }
        })
}

/// What clients (browsers, and proxies you purge) are told about caching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCaching {
    /// `Cache-Control: max-age=0, must-revalidate` and the ETag: browsers ask
    /// every time and get a cheap 304 while the page is unchanged. The server
    /// can keep a page for a week and still take it back at once.
    #[default]
    Revalidate,
    /// `max-age` and `Expires` from the server's timeout (django-cache-helpers'
    /// `cache_page`); a page cached forever gets only `Expires`, a year ahead.
    FromTimeout,
    /// Leave whatever the handler set.
    Untouched,
}

/// Sets the client-facing caching headers on a response that may be cached.
pub(crate) fn client_headers(
    headers: &mut HeaderMap,
    mode: ClientCaching,
    timeout: Option<Duration>,
    shared_max_age: Option<Duration>,
) {
    let s_maxage = shared_max_age
        .map(|d| format!(", s-maxage={}", d.as_secs()))
        .unwrap_or_default();
    let value = match (mode, timeout) {
        (ClientCaching::Untouched, _) => return,
        (ClientCaching::Revalidate, _) => format!("max-age=0, must-revalidate{s_maxage}"),
        (ClientCaching::FromTimeout, Some(t)) => {
            let expires = httpdate::fmt_http_date(SystemTime::now() + t);
            if let Ok(v) = HeaderValue::from_str(&expires) {
                headers.insert(EXPIRES, v);
            }
            format!("max-age={}{s_maxage}", t.as_secs())
        }
        (ClientCaching::FromTimeout, None) => {
            let year = Duration::from_secs(365 * 24 * 3600);
            let expires = httpdate::fmt_http_date(SystemTime::now() + year);
            if let Ok(v) = HeaderValue::from_str(&expires) {
                headers.insert(EXPIRES, v);
            }
            headers.remove(CACHE_CONTROL);
            return;
        }
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(CACHE_CONTROL, v);
    }
}

/// The headers of a response that must not be cached anywhere (a timeout of
/// zero means "do not cache", never "cache forever").
pub(crate) fn no_cache_headers(headers: &mut HeaderMap) {
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate, max-age=0"),
    );
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        headers.insert(EXPIRES, v);
    }
}

/// Marks a response with how it was served.
pub(crate) fn mark(headers: &mut HeaderMap, served: Served) {
    headers.insert(X_CACHE, served.header());
    // RFC 9211: the same, in the standard field.
    headers.insert(
        HeaderName::from_static("cache-status"),
        HeaderValue::from_static(match served {
            Served::Hit => "ultracache; hit",
            Served::Stale => "ultracache; hit; detail=stale",
            Served::Miss => "ultracache; fwd=miss",
        }),
    );
}

impl Page {
    /// Whether this stored response may answer `request`: every request
    /// header its own `Vary` names has the values the request it was computed
    /// for had (RFC 9111 §4.1). A page keyed under fewer names than it varies
    /// on is never served to a request that differs on the others.
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        if !self.headers.contains_key(VARY) {
            return true;
        }
        vary_names(&self.headers).iter().all(|name| {
            let stored = self
                .varied
                .iter()
                .filter(|(n, _)| n == name.as_str())
                .map(|(_, v)| v.as_str());
            let sent: Vec<_> = request
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect();
            stored.eq(sent.iter().map(|v| v.as_ref()))
        })
    }

    /// The response for a request served from this page.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn respond(
        &self,
        method: &Method,
        request: &HeaderMap,
        served: Served,
        client: ClientCaching,
        timeout: Option<Duration>,
        shared_max_age: Option<Duration>,
        surrogate: Option<&HeaderName>,
    ) -> Response<Body> {
        let now = SystemTime::now();
        let age = match &self.policy {
            Some(policy) => policy.age(now),
            None => now.duration_since(self.stored_at).unwrap_or_default(),
        }
        .as_secs();
        let not_modified = match &self.etag {
            Some(etag) => not_modified(request, etag),
            None => false,
        } || (self.policy.is_some()
            && super::freshness::unmodified_since(&self.headers, request));
        let body = if not_modified || method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(self.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            self.status
        };
        let headers = response.headers_mut();
        *headers = self.headers.clone();
        if let Some(etag) = &self.etag {
            headers.insert(ETAG, etag.clone());
        }
        // A fresh miss is 0 s old; one the origin said was older says so.
        if served != Served::Miss || age > 0 {
            headers.insert(AGE, HeaderValue::from(age));
        }
        if self.policy.is_some() {
            // The origin's own headers go to clients; what spoke to this
            // cache alone does not.
            headers.remove(super::freshness::SURROGATE_CONTROL);
        } else {
            client_headers(headers, client, timeout, shared_max_age);
        }
        if let Some(name) = surrogate {
            if let Ok(v) = HeaderValue::from_str(&self.tags) {
                headers.insert(name.clone(), v);
            }
        }
        if method == Method::HEAD && !not_modified {
            // The length the GET would have (RFC 9110 §9.3.2), not the
            // empty body's.
            headers.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        }
        mark(headers, served);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_stored_page_with_more_headers_than_a_map_holds_is_a_miss_not_a_panic() {
        let wire = StoredWire::Page(PageWire {
            status: 200,
            headers: vec![("x-a".into(), b"1".to_vec()); 40_000],
            body: b"hi".to_vec(),
            etag: None,
            stored_at_ms: 0,
            fresh_until_ms: None,
            url: "/".into(),
            route: None,
            varied: Vec::new(),
            tags: String::new(),
            policy: None,
        });
        let bytes = postcard::to_stdvec(&wire).unwrap();
        assert!(postcard::from_bytes::<Stored>(&bytes).is_err());
    }

    #[test]
    fn private_and_cookie_setting_responses_are_not_stored() {
        let ok = [StatusCode::OK];
        assert_eq!(refuse_to_store(StatusCode::OK, &headers(&[]), &ok), None);
        for (k, v) in [
            ("set-cookie", "a=b"),
            ("cache-control", "private"),
            ("cache-control", "public, no-store"),
            ("cache-control", "no-cache"),
            ("cache-control", "max-age = 0"),
            ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("expires", "garbage"),
            ("vary", "*"),
        ] {
            assert!(
                refuse_to_store(StatusCode::OK, &headers(&[(k, v)]), &ok).is_some(),
                "{k}: {v}"
            );
        }
        assert!(refuse_to_store(StatusCode::NOT_FOUND, &headers(&[]), &ok).is_some());
    }

    #[test]
    fn etags_match_weak_and_strong_forms() {
        let tag = etag_of(b"hello");
        let quoted = tag.to_str().unwrap().to_owned();
        assert!(not_modified(&headers(&[("if-none-match", &quoted)]), &tag));
        assert!(not_modified(
            &headers(&[("if-none-match", &format!("W/{quoted}, \"x\""))]),
            &tag
        ));
        assert!(!not_modified(&headers(&[("if-none-match", "\"x\"")]), &tag));
    }
}

/// How a stored page travels through the shared tier.
#[derive(serde::Serialize, serde::Deserialize)]
enum StoredWire {
    Variants(Vec<String>),
    Page(PageWire),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PageWire {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    etag: Option<Vec<u8>>,
    stored_at_ms: u64,
    fresh_until_ms: Option<u64>,
    url: String,
    route: Option<String>,
    varied: Vec<(String, String)>,
    tags: String,
    policy: Option<Box<http_cache_semantics::CachePolicy>>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

impl serde::Serialize for Stored {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = match self {
            Stored::Variants(names) => {
                StoredWire::Variants(names.iter().map(|n| n.as_str().to_owned()).collect())
            }
            Stored::Page(p) => StoredWire::Page(PageWire {
                status: p.status.as_u16(),
                headers: p
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                    .collect(),
                body: p.body.to_vec(),
                etag: p.etag.as_ref().map(|e| e.as_bytes().to_vec()),
                stored_at_ms: millis(p.stored_at),
                fresh_until_ms: p.fresh_until.map(millis),
                url: p.url.clone(),
                route: p.route.clone(),
                varied: p.varied.clone(),
                tags: p.tags.clone(),
                policy: p.policy.clone(),
            }),
        };
        wire.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Stored {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        Ok(match StoredWire::deserialize(d)? {
            StoredWire::Variants(names) => Stored::Variants(
                names
                    .iter()
                    .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(D::Error::custom))
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
            StoredWire::Page(w) => {
                // Stored bytes may hold more headers than a map takes: an
                // error (a miss), not a panic.
                let mut headers =
                    HeaderMap::try_with_capacity(w.headers.len()).map_err(D::Error::custom)?;
                for (n, v) in w.headers {
                    headers
                        .try_append(
                            HeaderName::from_bytes(n.as_bytes()).map_err(D::Error::custom)?,
                            HeaderValue::from_bytes(&v).map_err(D::Error::custom)?,
                        )
                        .map_err(D::Error::custom)?;
                }
                Stored::Page(Arc::new(Page {
                    status: StatusCode::from_u16(w.status).map_err(D::Error::custom)?,
                    headers,
                    body: Bytes::from(w.body),
                    etag: w
                        .etag
                        .map(|e| HeaderValue::from_bytes(&e))
                        .transpose()
                        .map_err(D::Error::custom)?,
                    stored_at: time(w.stored_at_ms),
                    fresh_until: w.fresh_until_ms.map(time),
                    url: w.url,
                    route: w.route,
                    varied: w.varied,
                    tags: w.tags,
                    policy: w.policy,
                }))
            }
        })
    }
}

/// Decodes stored page bytes as the shared tier does and, when they decode,
/// answers requests with `request`'s headers from them; the stored form
/// re-encoded. For the fuzz targets only.
#[cfg(fuzzing)]
pub(crate) fn fuzz_stored(bytes: &[u8], request: &HeaderMap) -> Option<Vec<u8>> {
    let stored: Stored = postcard::from_bytes(bytes).ok()?;
    let _ = weigh(&stored);
    if let Stored::Page(page) = &stored {
        let _ = page.matches(request);
        let surrogate = HeaderName::from_static("surrogate-key");
        for method in [Method::GET, Method::HEAD] {
            let _ = page.respond(
                &method,
                request,
                Served::Hit,
                ClientCaching::Revalidate,
                None,
                None,
                None,
            );
            let _ = page.respond(
                &method,
                request,
                Served::Stale,
                ClientCaching::FromTimeout,
                Some(Duration::from_secs(60)),
                Some(Duration::from_secs(60)),
                Some(&surrogate),
            );
        }
    }
    postcard::to_stdvec(&stored).ok()
}
