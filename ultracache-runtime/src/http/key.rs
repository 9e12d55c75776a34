//! Cache keys for requests: the path, the query string reduced to the
//! parameters that matter (in a stable order), and the request headers and
//! cookies the response varies on.

use http::header::{HeaderName, COOKIE};
use http::request::Parts;

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

/// The query string with only the parameters that matter, sorted: `?b=2&a=1`
/// and `?a=1&b=2` give the same key.
pub(crate) fn normalized_query(query: Option<&str>, params: &QueryParams) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    if matches!(params, QueryParams::Ignore) {
        return String::new();
    }
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            match params {
                QueryParams::All => true,
                QueryParams::Allow(names) => names.iter().any(|n| n == name),
                QueryParams::Deny(names) => !names.iter().any(|n| n == name),
                QueryParams::Ignore => false,
            }
        })
        .collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// The value of cookie `name` in the request, if it sent one.
pub(crate) fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Appends `name: value` lines for the request headers in `names`.
pub(crate) fn push_headers(key: &mut String, parts: &Parts, names: &[HeaderName]) {
    for name in names {
        key.push('\n');
        key.push_str(name.as_str());
        key.push(':');
        for value in parts.headers.get_all(name) {
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            key.push(',');
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
