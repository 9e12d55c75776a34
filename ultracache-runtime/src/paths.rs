//! Paths as dependencies: a cached response depends on its URL's path, so
//! purging a path drops every variant of it, and a model can name the paths
//! that show it (django-dumper's `dependent_paths`).

use crate::dep::{Dep, Kind};

/// The kind under which URL paths are recorded.
pub const PATH_KIND: Kind = Kind::new("ultracache.path");

/// The dependency on a URL path (such as `/posts/hello`).
///
/// ```
/// assert_eq!(ultracache::path_dep("/about").model_kind(), ultracache::PATH_KIND);
/// ```
pub fn path_dep(path: &str) -> Dep {
    Dep::object(PATH_KIND, path)
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
