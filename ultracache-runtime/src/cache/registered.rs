//! The cache of each `#[cached]` function, made on its first call.

use std::sync::atomic::Ordering::Relaxed;

use std::any::TypeId;
use std::sync::Arc;

use super::core::Core;
use super::outcome::{CacheKey, CacheValue};
use super::Cache;
use crate::registration::{CachedFn, Typed};

/// `cache`, weighing its keys with `keys` if given.
fn weighing<K, V>(cache: Cache<K, V>, keys: Option<fn(&K) -> usize>) -> Cache<K, V> {
    match keys {
        Some(keys) => cache.key_weigher(keys),
        None => cache,
    }
}

impl CachedFn {
    /// The function's cache for `#[cached(shared)]`: values also go through
    /// the shared tier.
    #[doc(hidden)]
    pub fn shared_cache<K, V>(
        &'static self,
        keys: Option<fn(&K) -> usize>,
    ) -> Option<&'static Cache<K, V>>
    where
        K: CacheKey + serde::Serialize,
        V: CacheValue + serde::Serialize + serde::de::DeserializeOwned,
    {
        self.typed(|c| weighing(c.shared(), keys))
    }

    /// The function's cache, typed by the key and value the call site infers.
    ///
    /// One function has one cache. A method of a generic `impl` is one
    /// function for every instantiation: if two instantiations have different
    /// key or value types, the second finds the cache typed for the first and
    /// computes without caching (logged once).
    ///
    /// `keys` weighs a key's heap, when its type tells it
    /// ([`HeapSize`](crate::HeapSize)).
    #[doc(hidden)]
    #[inline]
    pub fn cache<K: CacheKey, V: CacheValue>(
        &'static self,
        keys: Option<fn(&K) -> usize>,
    ) -> Option<&'static Cache<K, V>> {
        // Made already, and of these types.
        if let Some(cache) = self.cache.get().and_then(|c| c.cache.downcast_ref()) {
            return Some(cache);
        }
        self.typed(|c| weighing(c, keys))
    }

    /// The function's cache if a call made it already, typed by the key and
    /// value the call site infers (the borrowed hit path: it never makes one,
    /// so that a `shared` function's first call makes the shared kind).
    #[doc(hidden)]
    #[inline]
    pub fn existing<K: CacheKey, V: CacheValue>(&'static self) -> Option<&'static Cache<K, V>> {
        self.cache.get().and_then(|c| c.cache.downcast_ref())
    }

    /// The hit path: the live value for `key` in the function's cache, if a
    /// call made the cache already, with these key and value types, and it
    /// is connected to its store. Never computes nor makes the cache.
    #[doc(hidden)]
    #[inline]
    pub fn hit<K, V, Q>(&'static self, key: &Q) -> Option<V>
    where
        K: CacheKey,
        V: CacheValue,
        Q: std::hash::Hash + equivalent::Equivalent<K> + ?Sized,
    {
        let typed = self.cache.get()?;
        if typed.core_type != TypeId::of::<Core<K, V>>() {
            return None;
        }
        // SAFETY: `core` is the address of a `Core<K, V>` (its type was
        // checked above, and `typed` pairs the two when it is made), held
        // by an `Arc` inside the `Cache` that `typed` owns; `typed` is in
        // a `OnceLock` of a `'static`, never taken out or dropped, so the
        // core lives and stays in place for the rest of the program.
        let core = unsafe { &*(typed.core as *const Core<K, V>) };
        core.lookup(key)
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
                let cache = Box::new(finish(match self.store {
                    Some(store) => cache.store(store),
                    None => cache,
                }));
                let (core_type, core) = match cache.core() {
                    Some(core) => (TypeId::of::<Core<K, V>>(), Arc::as_ptr(core) as usize),
                    None => (TypeId::of::<()>(), 0),
                };
                Typed {
                    cache,
                    core_type,
                    core,
                }
            })
            .cache
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
