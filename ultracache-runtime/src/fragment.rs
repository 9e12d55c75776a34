//! Fragments: cached pieces of output rendered from Rust (askama, maud,
//! `format!`), with the same recording and nesting as every cache.

use std::convert::Infallible;
use std::time::Duration;

use crate::cache::{Cache, Timeout};

/// Every fragment, whatever its timeout: each entry expires on its own.
static FRAGMENTS: Cache<String, String> = Cache::new("fragment").module("ultracache").forever();

/// Caches a piece of rendered output under `key` for `timeout`: on a hit the
/// closure does not run. Reads inside it are recorded as the fragment's
/// dependencies, and a fragment inside a cached computation passes its
/// dependencies on, hit or miss.
///
/// `timeout` is a [`Duration`], whole seconds, or [`Timeout::Forever`].
///
/// ```
/// use ultracache::{fragment, track, Trackable};
///
/// #[derive(Trackable)]
/// struct Promo { id: u32, title: String }
///
/// let promo = Promo { id: 1, title: "Sale".into() };
/// let html = fragment(3600, format!("promo:{}", promo.id), || {
///     track(&promo);
///     format!("<aside>{}</aside>", promo.title)
/// });
/// assert_eq!(html, "<aside>Sale</aside>");
/// ```
pub fn fragment(
    timeout: impl Into<Timeout>,
    key: impl Into<String>,
    render: impl FnOnce() -> String,
) -> String {
    let timeout = match timeout.into() {
        Timeout::Forever => None,
        Timeout::After(d) => Some(d),
        Timeout::Computed(f) => Some(f()),
        Timeout::StoreDefault => Some(crate::config::DEFAULT_TIMEOUT),
    };
    match FRAGMENTS.try_get_or_compute_for(key.into(), timeout, || Ok::<_, Infallible>(render())) {
        Ok(html) => html,
        Err(never) => match never {},
    }
}

impl From<Duration> for Timeout {
    fn from(d: Duration) -> Self {
        Timeout::After(d)
    }
}

/// Whole seconds.
impl From<u64> for Timeout {
    fn from(secs: u64) -> Self {
        Timeout::After(Duration::from_secs(secs))
    }
}
