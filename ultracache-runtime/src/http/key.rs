//! Cache keys for requests, built from what the handler will see: the host,
//! the canonical path, the decoded query reduced to the parameters that
//! matter (in a stable order), and the request headers and cookies the
//! response varies on, parsed as the handler's extractors parse them.

use http::header::{HeaderName, COOKIE, HOST};
use http::request::Parts;

use crate::paths::canonical_path;

/// Which query parameters take part in the key.
#[derive(Clone, Debug, Default)]
pub(crate) enum QueryParams {
    /// All of them.
    #[default]
    All,
    /// Only these.
    Allow(Vec<String>),
    /// All but these.
    Deny(Vec<String>),
    /// None: the path alone.
    Ignore,
}

/// The query string as the handler decodes it, with only the parameters
/// that matter, re-encoded canonically and sorted by name: `?b=2&a=1` and
/// `?a=1&b=2` give the same key, `?p%61ge=2` is `?page=2`, `?q=a+b` is
/// `?q=a%20b`; repeated names keep their order (`?a=1&a=2` is not
/// `?a=2&a=1`). Allow and deny lists compare decoded names.
pub(crate) fn normalized_query(query: Option<&str>, params: &QueryParams) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    if matches!(params, QueryParams::Ignore) {
        return String::new();
    }
    let mut pairs: Vec<_> = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| match params {
            QueryParams::All => true,
            QueryParams::Allow(names) => names.iter().any(|n| n == name),
            QueryParams::Deny(names) => !names.iter().any(|n| n == name),
            QueryParams::Ignore => false,
        })
        .collect();
    // A stable sort: values of one name stay in the order they came.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The value of cookie `name` in the request, as axum-extra's `CookieJar`
/// reads it (the `cookie` crate, percent-decoded, the last of repeated
/// names): the key holds exactly what the handler will see.
pub(crate) fn cookie(parts: &Parts, name: &str) -> Option<String> {
    let mut found = None;
    let values = parts.headers.get_all(COOKIE);
    for header in values.iter().filter_map(|v| v.to_str().ok()) {
        for part in header.split(';') {
            if let Ok(c) = cookie::Cookie::parse_encoded(part) {
                if c.name() == name {
                    found = Some(c.value().to_owned());
                }
            }
        }
    }
    found
}

/// The host the request is for, lower-cased: from the request target when
/// it is absolute, else the `Host` header (RFC 9112 §3.2.2), escaped as
/// header values are in keys (bytes that are not UTF-8 are kept apart, not
/// dropped).
pub(crate) fn host(parts: &Parts) -> String {
    if let Some(a) = parts.uri.authority() {
        return a.as_str().to_ascii_lowercase();
    }
    let mut out = String::new();
    if let Some(h) = parts.headers.get(HOST) {
        push_escaped(&mut out, &h.as_bytes().to_ascii_lowercase());
    }
    out
}

/// The canonical path and `path?query` of a request (see
/// [`canonical_path`] and [`normalized_query`]).
pub(crate) fn request_url(parts: &Parts, params: &QueryParams) -> (String, String) {
    let path = canonical_path(parts.uri.path());
    let query = normalized_query(parts.uri.query(), params);
    let url = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    (path, url)
}

/// A page's key with the default key function: the host, a line break, then
/// the URL. A `Host` header cannot hold a line break, so no host spells
/// another host and path (`Host: www.example/admin` asking for `/` is not
/// `www.example` asking for `/admin/`).
pub(crate) fn default_key(parts: &Parts, url: &str) -> String {
    format!("{}\n{url}", host(parts))
}

/// Appends a `name:` line for each request header in `names`, with every
/// value the request sent for it, escaped and each ended by `,`: one value
/// `a,b` is not the two values `a` and `b`, and bytes that are not UTF-8 are
/// kept as they came.
pub(crate) fn push_headers(key: &mut String, parts: &Parts, names: &[HeaderName]) {
    for name in names {
        key.push('\n');
        key.push_str(name.as_str());
        key.push(':');
        for value in parts.headers.get_all(name) {
            push_escaped(key, value.as_bytes());
            key.push(',');
        }
    }
}

/// Appends a `cookie name` line: `=value` (escaped) when the request holds
/// the cookie, nothing more when it does not, so an absent cookie is not an
/// empty one and no value can spell another line.
pub(crate) fn push_cookie(key: &mut String, parts: &Parts, name: &str) {
    key.push_str("\ncookie ");
    key.push_str(name);
    if let Some(value) = cookie(parts, name) {
        key.push('=');
        push_escaped(key, value.as_bytes());
    }
}

/// `bytes` with everything but visible ASCII, and `%` and `,`, written as
/// `%XX`: the result holds no line break or separator, and two different
/// inputs never give the same text.
fn push_escaped(key: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' && b != b',' {
            key.push(b as char);
        } else {
            let _ = write!(key, "%{b:02X}");
        }
    }
}

/// `*` matches any run of characters; otherwise the pattern matches the whole
/// text exactly.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_order_does_not_matter() {
        let all = QueryParams::All;
        assert_eq!(
            normalized_query(Some("b=2&a=1"), &all),
            normalized_query(Some("a=1&b=2"), &all)
        );
    }

    #[test]
    fn allow_and_deny_lists() {
        let allow = QueryParams::Allow(vec!["page".into()]);
        assert_eq!(normalized_query(Some("page=2&junk=1"), &allow), "page=2");
        let deny = QueryParams::Deny(vec!["utm".into()]);
        assert_eq!(normalized_query(Some("utm=x&q=1"), &deny), "q=1");
    }

    #[test]
    fn names_are_compared_decoded_and_repeated_values_keep_their_order() {
        let allow = QueryParams::Allow(vec!["page".into()]);
        assert_eq!(normalized_query(Some("p%61ge=666"), &allow), "page=666");
        assert_eq!(
            normalized_query(Some("q=a+b"), &QueryParams::All),
            normalized_query(Some("q=a%20b"), &QueryParams::All)
        );
        assert_ne!(
            normalized_query(Some("a=1&a=2"), &QueryParams::All),
            normalized_query(Some("a=2&a=1"), &QueryParams::All)
        );
    }

    #[test]
    fn globs_are_anchored() {
        assert!(glob_match("/posts/*", "/posts/hello"));
        assert!(glob_match("/posts/*/edit", "/posts/a/edit"));
        assert!(!glob_match("/posts/*/edit", "/posts/a/edit/x"));
        assert!(glob_match("/about", "/about"));
        assert!(!glob_match("/about", "/about/team"));
        assert!(glob_match("*", "/anything"));
        assert!(!glob_match("/posts", "/posts/1"));
    }
}
