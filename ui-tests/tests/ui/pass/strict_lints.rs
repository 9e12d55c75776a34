//! Generated code is clean under strict lints, with `core`, `Result` and
//! `Option` shadowed where the user's code sits.
#![deny(warnings, missing_docs, unused_qualifications, rust_2018_idioms)]

/// A local module named like the standard one.
pub mod core {}

/// A shadowing `Result`.
pub type Result<T> = ::std::result::Result<T, String>;

/// A shadowing `Option`.
pub struct Option;

use ultracache::{
    cached, invalidates, tracks, AsyncFromMiss, CacheModel, FromMiss, Reference, Trackable,
};

/// A model.
#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "pass.post")]
pub struct Post {
    /// Id.
    pub id: i64,
    /// Title.
    pub title: String,
    /// Its author, read with it.
    #[trackable(related)]
    pub author: Author,
}

/// Another model.
#[derive(Clone, Debug, Trackable)]
pub struct Author {
    /// Id.
    #[trackable(id)]
    pub key: u32,
}

/// A comment, its rows captured from its table.
#[derive(Clone, Debug, Trackable)]
#[trackable(table = "comments")]
pub struct Comment {
    /// Id.
    pub id: i64,
    /// Its post.
    #[trackable(belongs_to = Post, column = "post")]
    pub post_id: i64,
}

/// Loads a post.
#[tracks]
pub fn load(id: i64) -> Post {
    Post { id, title: String::new(), author: Author { key: 1 } }
}

/// Loads posts.
#[tracks]
pub async fn load_all() -> Vec<Post> {
    vec![load(1)]
}

/// Saves a post.
#[invalidates(Post)]
pub fn save(post: Post) -> Result<Post> {
    Ok(post)
}

/// Deletes a post.
#[invalidates(Post, id = id)]
pub async fn delete(id: i64) {}

/// A page.
#[cached(timeout = 60)]
pub fn page(id: i64) -> Result<String> {
    Ok(load(id).title)
}

/// A page, async.
#[cached(forever, key = id)]
pub async fn page_async(id: i64, verbose: bool) -> ::std::option::Option<String> {
    let _ = verbose;
    Some(load_all().await.len().to_string())
}

/// A method.
pub struct Service {
    /// Prefix.
    pub prefix: String,
}

impl Service {
    /// Cached method.
    #[cached(timeout = 5, key = (self.prefix.clone(), n))]
    pub fn call(&self, n: u32) -> String {
        format!("{}{n}", self.prefix)
    }
}

/// A body that is one macro call (once flagged by `unused_braces`).
#[cached(forever)]
pub fn single_expression(k: u64) -> String {
    format!("{k:064}")
}

/// The same, async.
#[cached(forever)]
pub async fn single_expression_async(k: u64) -> String {
    format!("{k:064}")
}

mod reexport {
    pub use ultracache as uc;
}

/// Through a re-exporting crate path.
#[cached(timeout = 1, crate = "reexport::uc")]
pub fn via_reexport(n: u8) -> u8 {
    n
}

/// A cache model with a two-field key and references.
#[derive(CacheModel, serde::Serialize, serde::Deserialize)]
#[cache(timeout = 60)]
pub struct Member {
    /// Part of the key.
    #[cache(key)]
    pub org: String,
    /// Part of the key.
    #[cache(key)]
    pub number: u32,
    /// A reference to the same type.
    pub sponsor: ::std::option::Option<Reference<Member>>,
    /// A reference to another model.
    pub badge: Reference<Badge>,
}

/// A cache model built on a miss.
#[derive(CacheModel, serde::Serialize, serde::Deserialize)]
#[cache(name = "pass.badge", forever, local)]
pub struct Badge {
    /// The key.
    #[cache(key)]
    pub id: u64,
}

impl FromMiss for Badge {
    fn from_miss(key: &BadgeKey) -> ::std::option::Option<Self> {
        ::std::option::Option::Some(Badge { id: key.id })
    }
}

/// A cache model built asynchronously.
#[derive(CacheModel, serde::Serialize, serde::Deserialize)]
pub struct Rate {
    /// The key.
    #[cache(key)]
    pub pair: String,
}

impl AsyncFromMiss for Rate {
    async fn from_miss(key: &RateKey) -> ::std::option::Option<Self> {
        ::std::option::Option::Some(Rate { pair: key.pair.clone() })
    }
}

fn main() {
    let _ = page(1);
    let _ = save(load(1));
    let _ = Service { prefix: String::new() }.call(1);
    let _ = via_reexport(1);
    let _ = (single_expression(1), single_expression_async(1));
    let _ = (page_async(1, true), delete(1));
}
