//! Procedural macros of [ultracache](https://docs.rs/ultracache). Use them
//! through the `ultracache` crate, which re-exports them with their runtime.

#![warn(rust_2018_idioms)]

mod args;
mod ast;
mod cached;
mod invalidates;
mod model;
mod timeout;
mod trackable;
mod tracks;
mod util;

use darling::ast::NestedMeta;
use darling::{FromDeriveInput, FromMeta};
use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::ToTokens;

/// On error, the item is emitted unchanged next to the errors, so one mistake
/// does not cascade into "function not found" everywhere it is called.
fn with_fallback(item: TokenStream2, result: syn::Result<TokenStream2>) -> TokenStream {
    match result {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let mut out = e.to_compile_error();
            item.to_tokens(&mut out);
            out.into()
        }
    }
}

fn parse_args<A: FromMeta>(args: TokenStream) -> syn::Result<A> {
    let metas = NestedMeta::parse_meta_list(args.into())?;
    A::from_list(&metas).map_err(syn::Error::from)
}

/// Caches a function's result, keyed by its arguments, with everything it read
/// as dependencies.
///
/// ```
/// use ultracache::{cached, invalidate, tracks, Trackable};
///
/// #[derive(Clone, Trackable)]
/// #[trackable(kind = "blog.post")]
/// struct Post { id: i64, title: String }
///
/// #[tracks]
/// fn load_post(id: i64) -> Post { Post { id, title: format!("Post {id}") } }
///
/// #[cached(timeout = 3600, key = post_id)]
/// fn post_page(post_id: i64) -> String {
///     format!("<h1>{}</h1>", load_post(post_id).title)
/// }
///
/// assert_eq!(post_page(1), "<h1>Post 1</h1>"); // computed
/// assert_eq!(post_page(1), "<h1>Post 1</h1>"); // from the cache
/// invalidate(&load_post(1));                   // post 1 was written
/// assert_eq!(post_page(1), "<h1>Post 1</h1>"); // computed again
/// ```
///
/// Arguments (all optional):
///
/// | argument | meaning |
/// |---|---|
/// | `timeout = 3600` | entries live this many whole seconds; also any `Duration` expression (`Duration::from_millis(500)`) |
/// | `forever` | entries live until invalidated or evicted |
/// | `key = expr` | the key: any expression over the arguments (`key = (user.id, page)`, `key = self.slug`); by default, all arguments |
/// | `skip(a, b)` | leave these arguments out of the default key |
/// | `shared` | values also go through the shared tier (Redis), for every node; they must be serde types |
/// | `store = "name"` | keep entries in a named store of the [`Config`](../ultracache/struct.Config.html) |
/// | `crate = "path"` | where `ultracache` is, for crates that re-export it |
///
/// Without `timeout` or `forever`, the store's default timeout applies.
/// The function may be `async` (the future is `Send` when the body's is), a
/// method, or return `Result` (only `Ok` is stored) or `Option` (`None` is
/// stored like any value). Concurrent callers that miss on one key run the body
/// once. Two functions never share entries.
///
/// A function has one cache. In a generic `impl`, every instantiation of a
/// method shares it: put what tells the instantiations apart into the key.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let item2: TokenStream2 = item.into();
    let result = parse_args::<args::CachedArgs>(args)
        .and_then(|a| Ok((a, ast::parse_function(item2.clone(), "cached")?)))
        .and_then(|(a, f)| cached::expand(a, f));
    with_fallback(item2, result)
}

/// Records every model in the function's return value as a read of the
/// computation being cached: a model, a reference, `Option`, `Vec`, slices,
/// maps, `Result` (its `Ok`) and tuples of these. A collection, and an `Option`
/// that is `None`, also record the kind itself, so creating an object
/// invalidates lists and failed lookups.
///
/// ```
/// use ultracache::{tracks, Trackable};
///
/// #[derive(Clone, Trackable)]
/// struct Post { id: i64 }
///
/// #[tracks]
/// fn latest_posts(n: i64) -> Vec<Post> { (1..=n).map(|id| Post { id }).collect() }
///
/// #[tracks]
/// fn find_post(id: i64) -> Option<Post> { None }
/// # latest_posts(2); find_post(1);
/// ```
#[proc_macro_attribute]
pub fn tracks(args: TokenStream, item: TokenStream) -> TokenStream {
    let item2: TokenStream2 = item.into();
    let result = parse_args::<args::TracksArgs>(args)
        .and_then(|a| Ok((a, ast::parse_function(item2.clone(), "tracks")?)))
        .and_then(|(a, f)| tracks::expand(a, f));
    with_fallback(item2, result)
}

/// Invalidates what the function wrote once it returns (for a `Result`, only
/// when it is `Ok`): every object of the named kinds found in its arguments and
/// return value, and each kind itself.
///
/// ```
/// use ultracache::{invalidates, Trackable};
///
/// #[derive(Clone, Trackable)]
/// struct Post { id: i64, title: String }
///
/// #[invalidates(Post)]
/// fn save_post(post: Post) -> Result<Post, String> { Ok(post) }
///
/// #[invalidates(Post, id = post_id)]
/// fn delete_post(post_id: i64) {}
/// # save_post(Post { id: 1, title: String::new() }).unwrap(); delete_post(1);
/// ```
///
/// `id = expr` names the object when only its id is at hand. With several
/// kinds (`#[invalidates(Post, Comment)]`), each is handled alike. A kind with
/// no object in the arguments, the result or `id` is invalidated whole: every
/// entry that depends on any object of it is dropped.
#[proc_macro_attribute]
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    let item2: TokenStream2 = item.into();
    let result = syn::parse::<args::InvalidatesArgs>(args)
        .and_then(|a| Ok((a, ast::parse_function(item2.clone(), "invalidates")?)))
        .and_then(|(a, f)| invalidates::expand(a, f));
    with_fallback(item2, result)
}

/// Makes a struct a model: reads of it are recorded, writes invalidate.
///
/// ```
/// use ultracache::Trackable;
///
/// #[derive(Clone, Trackable)]
/// #[trackable(kind = "blog.post")]       // optional; default: the type's name
/// struct Post {
///     #[trackable(id)]                    // optional for a field named `id`
///     slug: String,
///     #[trackable(related)]               // reading a post reads its author
///     author: Author,
/// }
///
/// #[derive(Clone, Trackable)]
/// struct Author { id: u32 }
/// ```
///
/// For change capture (`ultracache::db::{sqlite, postgres}`), a model says
/// which table its rows live in and which of its fields name the objects a
/// row belongs to; `Table::model::<Comment>()` reads that back:
///
/// ```
/// use ultracache::Trackable;
///
/// #[derive(Trackable)]
/// #[trackable(table = "posts")]             // the id field's column is the key
/// struct Post { id: i64 }
///
/// #[derive(Trackable)]
/// #[trackable(table = "comments")]
/// struct Comment {
///     id: i64,
///     #[trackable(belongs_to = Post)]      // a change refreshes that post only
///     post_id: i64,
///     #[trackable(belongs_to = Post, column = "quoted")] // a column named otherwise
///     quoted_post: i64,
/// }
/// ```
#[proc_macro_derive(Trackable, attributes(trackable))]
pub fn derive_trackable(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    let result = trackable::check_shape(&input)
        .and_then(|()| {
            trackable::TrackableInput::from_derive_input(&input).map_err(syn::Error::from)
        })
        .and_then(trackable::expand);
    match result {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Makes a struct a cache model: kept in the cache under a key made from its
/// `#[cache(key)]` fields, with `save`, `get` and `delete` (see the
/// `CacheModel` trait for the arguments), and a generated `<Type>Key` struct.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use ultracache::{CacheModel, Reference};
///
/// #[derive(CacheModel, Serialize, Deserialize)]
/// struct Workplace { #[cache(key)] name: String, phone: String, employees: u32 }
///
/// #[derive(CacheModel, Serialize, Deserialize)]
/// #[cache(timeout = 600)]
/// struct User {
///     #[cache(key)]
///     username: String,
///     email: String,
///     workplace: Reference<Workplace>,
///     mother: Option<Reference<User>>,
/// }
///
/// let acme = Workplace { name: "Acme".into(), phone: "555-0100".into(), employees: 12 };
/// acme.save().unwrap();
/// let bob = User {
///     username: "bob".into(),
///     email: "bob@example.com".into(),
///     workplace: Reference::new(acme),
///     mother: None,
/// };
/// bob.save().unwrap();
/// let u = User::get(&UserKey { username: "bob".into() }).unwrap();
/// assert_eq!(u.workplace.get().unwrap().employees, 12);
/// ```
#[proc_macro_derive(CacheModel, attributes(cache))]
pub fn derive_cache_model(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    let result = model::check_shape(&input)
        .and_then(|()| model::ModelInput::from_derive_input(&input).map_err(syn::Error::from))
        .and_then(model::expand);
    match result {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
