//! Whole-response caching for axum and tower: [`CacheLayer`].
//!
//! Every read the handler makes is recorded as a dependency of the response,
//! like any cached computation; writing one of those objects drops every
//! variant of every URL that showed it. The response also depends on its
//! path, so [`purge_urls`] and [`DependentPaths`](crate::DependentPaths) drop
//! pages by URL.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use ultracache::http::CacheLayer;
//!
//! async fn list_posts() -> &'static str { "<ul>…</ul>" }
//! async fn show_post() -> &'static str { "<h1>…</h1>" }
//! async fn account() -> &'static str { "private" }
//!
//! let app: Router = Router::new()
//!     .route("/posts", get(list_posts))
//!     .route("/posts/{slug}", get(show_post))
//!     .layer(CacheLayer::new(Duration::from_secs(3600)))
//!     // a route of its own, not cached:
//!     .route("/account", get(account));
//! ```
//!
//! The rules:
//! - Only GET and HEAD are answered from the cache; HEAD uses the GET entry.
//!   Other methods pass through and are never stored.
//! - Never stored: responses with `Set-Cookie`, `Cache-Control: private`,
//!   `no-store`, `no-cache` or `max-age=0`, an `Expires` in the past,
//!   `Vary: *`, a status outside the cacheable list (200 by default), bodies
//!   over the size limit (streamed through untouched).
//! - Requests with `Authorization` bypass the cache unless the layer allows
//!   them (and then each credential has its own entries); with
//!   [`anonymous_only`](CacheLayer::anonymous_only), so do requests carrying
//!   the session cookie.
//! - The response's `Vary` is honoured: one entry per variant.
//! - Responses carry `X-Cache: HIT`, `MISS` or `STALE`, `Age` on hits, and an
//!   `ETag`; `If-None-Match` is answered `304` from the cache. Clients are told
//!   `Cache-Control: max-age=0, must-revalidate` by default (see
//!   [`ClientCaching`]), whatever the server's timeout.

mod counts;
mod freshness;
mod key;
mod layer;
mod page;
#[cfg(feature = "redis")]
mod reader;
mod urls;

pub use counts::{route_stats, url_stats, UrlStats};
pub use layer::{CacheLayer, CacheService};
#[cfg(fuzzing)]
pub(crate) use page::fuzz_stored;
pub use page::{ClientCaching, Page, Stored, X_CACHE};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use reader::PageReader;
pub use urls::{find_urls, purge_urls, CachedUrl};
