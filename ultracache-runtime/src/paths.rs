//! Paths as dependencies: a cached response depends on its URL's path, so
//! purging a path drops every variant of it, and a model can name the paths
//! that show it (django-dumper's `dependent_paths`).

use crate::dep::{Dep, Kind};

/// The kind under which URL paths are recorded.
pub const PATH_KIND: Kind = Kind::new("ultracache.path");

/// The dependency on a URL path (such as `/posts/hello`), in its canonical
/// form: `/posts/hell%6F` is the same path.
///
/// ```
/// use ultracache::path_dep;
/// assert_eq!(path_dep("/about").model_kind(), ultracache::PATH_KIND);
/// assert_eq!(path_dep("/posts/hell%6F"), path_dep("/posts/hello"));
/// ```
pub fn path_dep(path: &str) -> Dep {
    Dep::object(PATH_KIND, canonical_path(path).as_str())
}

/// A path in the form every equivalent spelling shares (RFC 3986 §6.2.2):
/// percent-encoded unreserved characters (letters, digits, `-._~`) are
/// decoded, other escapes get upper-case hex digits. Reserved characters stay
/// encoded (`%2F` is not `/` to a router), so the canonical path routes as the
/// original did.
pub(crate) fn canonical_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(c as char);
                } else {
                    out.push('%');
                    out.push_str(&format!("{c:02X}"));
                }
                i += 3;
                continue;
            }
        }
        // Not an escape: copied as is (the path came from a parsed URI).
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The URL paths that show a model: writing the object drops them (through
/// [`invalidate`](crate::invalidate) and `#[invalidates]`), whatever else
/// they read.
///
/// Implement it next to `#[derive(Trackable)]`; the derive finds it.
///
/// ```
/// use ultracache::{DependentPaths, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64, slug: String }
///
/// impl DependentPaths for Post {
///     fn dependent_paths(&self) -> Vec<String> {
///         vec!["/".into(), format!("/posts/{}", self.slug)]
///     }
/// }
///
/// let post = Post { id: 1, slug: "hello".into() };
/// assert_eq!(Trackable::dependent_paths(&post), ["/", "/posts/hello"]);
/// ```
pub trait DependentPaths {
    /// The paths (no query string) that show this object.
    fn dependent_paths(&self) -> Vec<String>;
}
