//! The cache of each `#[cached]` function, made on its first call.

use std::sync::atomic::Ordering::Relaxed;

use super::outcome::{CacheKey, CacheValue};
use super::Cache;
use crate::registration::CachedFn;

impl CachedFn {
    /// The function's cache for `#[cached(shared)]`: values also go through
    /// the shared tier.
    #[doc(hidden)]
    pub fn shared_cache<K, V>(&'static self) -> Option<&'static Cache<K, V>>
    where
        K: CacheKey + serde::Serialize,
        V: CacheValue + serde::Serialize + serde::de::DeserializeOwned,
    {
        self.typed(|c| c.shared())
    }

    /// The function's cache, typed by the key and value the call site infers.
    ///
    /// One function has one cache. A method of a generic `impl` is one
    /// function for every instantiation: if two instantiations have different
    /// key or value types, the second finds the cache typed for the first and
    /// computes without caching (logged once).
    #[doc(hidden)]
    #[inline]
    pub fn cache<K: CacheKey, V: CacheValue>(&'static self) -> Option<&'static Cache<K, V>> {
        // The hit path: made already, and of these types.
        if let Some(cache) = self.cache.get().and_then(|c| c.downcast_ref()) {
            return Some(cache);
        }
        self.typed(|c| c)
    }

    /// The function's cache if a call made it already, typed by the key and
    /// value the call site infers (the borrowed hit path: it never makes one,
    /// so that a `shared` function's first call makes the shared kind).
    #[doc(hidden)]
    #[inline]
    pub fn existing<K: CacheKey, V: CacheValue>(&'static self) -> Option<&'static Cache<K, V>> {
        self.cache.get().and_then(|c| c.downcast_ref())
    }

    #[cold]
    fn typed<K: CacheKey, V: CacheValue>(
        &'static self,
        finish: impl FnOnce(Cache<K, V>) -> Cache<K, V>,
    ) -> Option<&'static Cache<K, V>> {
        let typed = self
            .cache
            .get_or_init(|| {
                let cache = Cache::<K, V>::new(self.name)
                    .module(self.module)
                    .with_timeout(self.timeout);
                let cache = match self.stale_if_error {
                    Some(grace) => cache.stale_if_error(grace),
                    None => cache,
                };
                Box::new(finish(match self.store {
                    Some(store) => cache.store(store),
                    None => cache,
                }))
            })
            .downcast_ref();
        if typed.is_none() && !self.mismatch_logged.swap(true, Relaxed) {
            tracing::error!(
                function = self.name,
                module = self.module,
                "ultracache: `{}::{}` is called with another key or value type than \
                 its cache was created for (a method of a generic impl?); \
                 these calls are not cached",
                self.module,
                self.name
            );
        }
        typed
    }
}
