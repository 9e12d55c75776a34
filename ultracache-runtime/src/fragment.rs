//! Fragments: cached pieces of output rendered from Rust (askama, maud,
//! `format!`), with the same recording and nesting as every cache.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::cache::{Cache, CacheValue, Timeout};

/// Caches of one value type, one per timeout in use (each cache has one
/// timeout). Leaked once per distinct timeout: programs use a handful.
pub(crate) struct ByTimeout<V: 'static> {
    name: &'static str,
    caches: Mutex<BTreeMap<Option<Duration>, &'static Cache<String, V>>>,
}

impl<V: CacheValue> ByTimeout<V> {
    pub(crate) const fn new(name: &'static str) -> Self {
        ByTimeout {
            name,
            caches: Mutex::new(BTreeMap::new()),
        }
    }

    /// The cache for `timeout` (`None`: no expiry).
    pub(crate) fn get(&self, timeout: Option<Duration>) -> &'static Cache<String, V> {
        let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        caches.entry(timeout).or_insert_with(|| {
            let cache = Cache::new(self.name).module("ultracache");
            let cache = match timeout {
                Some(t) => cache.timeout(t),
                None => cache.forever(),
            };
            Box::leak(Box::new(cache))
        })
    }
}

static FRAGMENTS: ByTimeout<String> = ByTimeout::new("fragment");

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
    FRAGMENTS.get(timeout).get_or_compute(key.into(), render)
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
