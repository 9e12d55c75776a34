//! Caches: typed maps from a key to an entry, with single flight, recording
//! and the publish [`protocol`](crate::protocol) that keeps stale values out.
//!
//! A hit is a lock-free read of the cache's front map ([`front`]), a liveness
//! check (live, not expired) and a clone of the value. The entry also lives
//! in its [`store`](crate::store) (the store of record), which bounds memory
//! and evicts; an evicted entry leaves the front and the registry as the
//! store lets go of it.
//!
//! - [`outcome`]: what keys and values are, and which results are stored;
//! - [`slot`]: one stored value and its life;
//! - [`front`]: the front map, slots by key, read without a lock;
//! - [`core`]: the hit path, publishing;
//! - [`resolve`]: hit, single flight, shared tier, compute, publish;
//! - [`block`]: the look-up / compute / store API in three steps.

mod block;
mod core;
mod front;
mod grace;
mod outcome;
mod registered;
mod resolve;
mod slot;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::config::Timeout;
pub use block::{Lookup, Recording};
pub use outcome::{CacheKey, CacheValue, OkOnly, Outcome, Plain};

use self::core::Core;
use crate::clock::{self, NEVER};
use crate::dep::Dep;
use crate::recorder::{self, Reads, Recorded};
use crate::runtime::{self, CacheHandle};
use crate::stats::CacheStats;
use crate::versions::versions;

/// A cache of values of type `V` by keys of type `K`: the block API, for code
/// that is not a whole function (django-ultracache's `Ultracache` object).
///
/// Declare it as a `static`; it connects to its store on first use. Reads
/// recorded while a value is computed become the entry's dependencies, exactly
/// as for `#[cached]` functions.
///
/// ```
/// use std::time::Duration;
/// use ultracache::{track, Cache, Trackable};
///
/// #[derive(Clone, Trackable)]
/// struct User { id: u64, name: String }
///
/// static GREETING: Cache<u64, String> = Cache::new("greeting").timeout(Duration::from_secs(60));
///
/// let user = User { id: 1, name: "Ada".into() };
/// let html = GREETING.get_or_compute(user.id, || {
///     track(&user);
///     format!("<p>Hello, {}</p>", user.name)
/// });
/// assert_eq!(html, "<p>Hello, Ada</p>");
/// assert_eq!(GREETING.get(&1).as_deref(), Some("<p>Hello, Ada</p>"));
///
/// ultracache::invalidate(&user); // the user changed: the greeting is gone
/// assert_eq!(GREETING.get(&1), None);
/// ```
pub struct Cache<K, V> {
    name: &'static str,
    module: &'static str,
    store: Option<&'static str>,
    timeout: Timeout,
    weigher: Option<fn(&V) -> usize>,
    key_weigher: Option<fn(&K) -> usize>,
    on_invalidated: Option<fn(&K, &V)>,
    grace: Option<Duration>,
    #[cfg(feature = "redis")]
    codec: Option<crate::tier::Codec<K, V>>,
    core: OnceLock<Option<Arc<Core<K, V>>>>,
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.name)
            .field("store", &self.store)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<K, V> Cache<K, V> {
    /// A cache named `name` (in statistics and logs), in the default store, with
    /// the store's default timeout.
    pub const fn new(name: &'static str) -> Self {
        Cache {
            name,
            module: "",
            store: None,
            timeout: Timeout::StoreDefault,
            weigher: None,
            key_weigher: None,
            on_invalidated: None,
            grace: None,
            #[cfg(feature = "redis")]
            codec: None,
            core: OnceLock::new(),
        }
    }

    /// Serves stale on error, never stale on change: a value past its
    /// timeout is kept for `grace` more, and returned when computing it again
    /// fails — the computation returns `Err` (for a `Result`) or panics —
    /// instead of the error (as Varnish's grace mode and RFC 5861's
    /// `stale-if-error` do). A value that something it read was written
    /// since is never served this way: an invalidated value is known to be
    /// wrong. Counted in [`CacheStats::served_stale`](crate::CacheStats::served_stale).
    ///
    /// Kept values are bounded too: in a store bounded in bytes, the kept
    /// values of all its caches weigh at most a quarter of the bound and
    /// count within it (new entries evict for the room they hold), each
    /// cache's an equal part of it (those whose grace ends first make
    /// room; a heavier value is not kept); otherwise at most
    /// 10,000 per cache are kept ([`CacheStats::kept`](crate::CacheStats::kept)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ultracache::Cache;
    ///
    /// static RATES: Cache<&str, f64> = Cache::new("rates")
    ///     .timeout(Duration::from_secs(60))
    ///     .stale_if_error(Duration::from_secs(3600));
    ///
    /// let rate: Result<f64, String> = RATES.try_get_or_compute("EUR", || Ok(1.08));
    /// assert_eq!(rate, Ok(1.08));
    /// ```
    pub const fn stale_if_error(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Entries expire `timeout` after they are stored.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Timeout::After(timeout);
        self
    }

    /// Entries never expire: they live until invalidated or evicted.
    pub const fn forever(mut self) -> Self {
        self.timeout = Timeout::Forever;
        self
    }

    /// Sets the timeout as a [`Timeout`].
    pub const fn with_timeout(mut self, timeout: Timeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// Keeps entries in the store configured under `name`.
    pub const fn store(mut self, name: &'static str) -> Self {
        self.store = Some(name);
        self
    }

    /// Estimates a value's heap size, for stores bounded in bytes.
    pub const fn weigher(mut self, weigher: fn(&V) -> usize) -> Self {
        self.weigher = Some(weigher);
        self
    }

    /// Estimates a key's heap size, for stores bounded in bytes: keys a
    /// request chooses (a URL, a search) can outweigh their values.
    /// `#[cached]` weighs keys that implement [`HeapSize`](crate::HeapSize)
    /// by itself.
    ///
    /// ```
    /// use ultracache::{Cache, HeapSize};
    ///
    /// static SEARCHES: Cache<String, Vec<u64>> = Cache::new("searches")
    ///     .key_weigher(String::heap_size)
    ///     .weigher(Vec::heap_size);
    /// # let _ = &SEARCHES;
    /// ```
    pub const fn key_weigher(mut self, weigher: fn(&K) -> usize) -> Self {
        self.key_weigher = Some(weigher);
        self
    }

    /// Shares this cache's values through the Redis tier, when one is
    /// configured (see [`redis`](crate::redis)); the in-process store stays in
    /// front. Keys and values must be serde types. Without the `redis` feature,
    /// or without a configured tier, it does nothing.
    pub const fn shared(self) -> Self
    where
        K: serde::Serialize,
        V: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        #[cfg(feature = "redis")]
        {
            let mut this = self;
            this.codec = Some(crate::tier::Codec::new());
            this
        }
        #[cfg(not(feature = "redis"))]
        self
    }

    /// Like [`shared`](Self::shared), for values that are the bytes of a `T`:
    /// the entries carry `T`'s fingerprint, so a changed `T` reads as a miss.
    #[cfg_attr(not(feature = "redis"), allow(clippy::extra_unused_type_parameters))]
    pub(crate) const fn shared_as<T>(self) -> Self
    where
        K: serde::Serialize,
        V: serde::Serialize + serde::de::DeserializeOwned + 'static,
        T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        #[cfg(feature = "redis")]
        {
            let mut this = self;
            this.codec = Some(crate::tier::Codec::new().fingerprint_of::<T>());
            this
        }
        #[cfg(not(feature = "redis"))]
        self
    }

    /// Calls `hook` with each entry an invalidation (or `clear`) drops, after
    /// it is dropped; evictions and expiry do not call it.
    pub const fn on_invalidated(mut self, hook: fn(&K, &V)) -> Self {
        self.on_invalidated = Some(hook);
        self
    }

    /// Names the module the cache belongs to (statistics).
    pub const fn module(mut self, module: &'static str) -> Self {
        self.module = module;
        self
    }

    /// The cache's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<K: CacheKey, V: CacheValue> Cache<K, V> {
    #[inline]
    fn core(&self) -> Option<&Arc<Core<K, V>>> {
        self.core.get_or_init(|| self.connect()).as_ref()
    }

    fn connect(&self) -> Option<Arc<Core<K, V>>> {
        let rt = runtime::get();
        let Some(store) = rt.store(self.store) else {
            tracing::error!(
                cache = self.name,
                store = self.store,
                "ultracache: cache `{}` names store {:?}, which is not configured; \
                 its values are computed on every call",
                self.name,
                self.store
            );
            return None;
        };
        let timeout = self.timeout.resolve(store.default_timeout);
        #[cfg(feature = "redis")]
        let shared = match (self.codec, rt.tier()) {
            (Some(codec), Some(tier)) => Some(crate::tier::Shared {
                tier: Arc::clone(tier),
                codec,
                fingerprint: (codec.fingerprint)(),
                name: self.name,
                timeout,
            }),
            _ => None,
        };
        #[allow(unused_mut)]
        let mut core = Core::new(
            self.name,
            self.module,
            store,
            timeout,
            self.weigher,
            self.on_invalidated,
        );
        #[cfg(feature = "redis")]
        {
            core.shared = shared;
        }
        core.key_weigher = self.key_weigher;
        core.grace = self
            .grace
            .map(|period| grace::Grace::new(period, &core.store));
        let core = Arc::new(core);
        let handle: Arc<dyn CacheHandle> = Arc::clone(&core) as Arc<dyn CacheHandle>;
        rt.register_cache(Arc::downgrade(&handle));
        Some(core)
    }

    /// Whether the cache's store is configured (else every call computes).
    pub(crate) fn connected(&self) -> bool {
        self.core().is_some()
    }

    /// The cached value for `key`, if there is a live one. A hit inside a
    /// computation that is being cached adds the entry's dependencies to it.
    ///
    /// `key` may be any form that hashes and compares as the key does, as
    /// with `HashMap::get`: a `&str` for a `String` key.
    ///
    /// ```
    /// let cache = ultracache::Cache::<String, u32>::new("lengths");
    /// cache.get_or_compute("abc".to_owned(), || 3);
    /// assert_eq!(cache.get("abc"), Some(3));
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: std::hash::Hash + equivalent::Equivalent<K> + ?Sized,
    {
        self.core()?.lookup(key)
    }

    /// The cached value for `key` from this process or, for a
    /// [`shared`](Self::shared) cache, from the shared tier (which then joins
    /// this process's store); never computes.
    pub async fn fetch(&self, key: &K) -> Option<V> {
        let core = self.core()?;
        if let Some(v) = core.lookup(key) {
            return Some(v);
        }
        #[cfg(feature = "redis")]
        if let Some(shared) = &core.shared {
            let basis = versions().now();
            if let crate::tier::Found::Hit(value, deps) = shared.fetch(key).await {
                return Some(core.shared_hit(key.clone(), None, value, deps, basis));
            }
        }
        None
    }

    /// The cached value for `key`, or the value `f` computes (once, however many
    /// callers miss at the same time), stored with what `f` read.
    pub fn get_or_compute(&self, key: K, f: impl FnOnce() -> V) -> V {
        self.resolve::<V, Plain>(key, None, f)
    }

    /// Like [`get_or_compute`](Self::get_or_compute) for a fallible
    /// computation: only `Ok` values are stored.
    pub fn try_get_or_compute<E>(&self, key: K, f: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        self.resolve::<Result<V, E>, OkOnly>(key, None, f)
    }

    /// [`try_get_or_compute`](Self::try_get_or_compute), the value expiring
    /// after `timeout` (`None`: never) rather than the cache's timeout: one
    /// cache for values of many lifetimes (template blocks, fragments).
    pub(crate) fn try_get_or_compute_for<E>(
        &self,
        key: K,
        timeout: Option<Duration>,
        f: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        match self.core() {
            Some(core) => core.resolve_for::<Result<V, E>, OkOnly>(key, None, timeout, f),
            None => f(),
        }
    }

    /// [`try_get_or_compute_for`](Self::try_get_or_compute_for) under the
    /// outcome `O`'s rules: what is stored, and what counts as a failure a
    /// value kept past its timeout may answer.
    #[cfg(feature = "minijinja")]
    pub(crate) fn compute_for_with<R, O: Outcome<R, Value = V>>(
        &self,
        key: K,
        timeout: Option<Duration>,
        f: impl FnOnce() -> R,
    ) -> R {
        match self.core() {
            Some(core) => core.resolve_for::<R, O>(key, None, timeout, f),
            None => f(),
        }
    }

    /// The async form of [`get_or_compute`](Self::get_or_compute): callers that
    /// miss while another computes wait without blocking their thread.
    pub async fn get_or_compute_async(&self, key: K, fut: impl Future<Output = V>) -> V {
        self.resolve_async::<V, Plain, _>(key, None, fut).await
    }

    /// The async form of [`try_get_or_compute`](Self::try_get_or_compute).
    pub async fn try_get_or_compute_async<E>(
        &self,
        key: K,
        fut: impl Future<Output = Result<V, E>>,
    ) -> Result<V, E> {
        self.resolve_async::<Result<V, E>, OkOnly, _>(key, None, fut)
            .await
    }

    /// Resolves `key` for a computation whose result `R` maps to the stored
    /// value through `O` (what `#[cached]` expands to).
    ///
    /// `weigh`, if given, estimates the heap size of a result (for stores
    /// bounded in bytes); otherwise the cache's [`weigher`](Self::weigher) is used.
    #[inline]
    pub fn resolve<R, O: Outcome<R, Value = V>>(
        &self,
        key: K,
        weigh: Option<fn(&R) -> usize>,
        f: impl FnOnce() -> R,
    ) -> R {
        match self.core() {
            Some(core) => core.resolve::<R, O>(key, weigh, f),
            None => f(),
        }
    }

    /// The async form of [`resolve`](Self::resolve).
    pub async fn resolve_async<R, O, F>(&self, key: K, weigh: Option<fn(&R) -> usize>, fut: F) -> R
    where
        O: Outcome<R, Value = V>,
        F: Future<Output = R>,
    {
        match self.core() {
            Some(core) => core.resolve_async::<R, O, F>(key, weigh, fut).await,
            None => fut.await,
        }
    }

    /// Looks `key` up and, on a miss, starts recording: the block API's
    /// look-up / compute / store in three steps.
    ///
    /// The recording belongs to this thread until it is stored or dropped:
    /// use it in synchronous code, and close recordings in the reverse order
    /// of opening them. Async code uses
    /// [`get_or_compute_async`](Self::get_or_compute_async), whose recording
    /// travels with the future.
    ///
    /// ```
    /// use ultracache::{Cache, Lookup};
    ///
    /// static METRICS: Cache<u64, Vec<u32>> = Cache::new("user-metrics");
    ///
    /// let codes = match METRICS.begin(7) {
    ///     Lookup::Hit(codes) => codes,
    ///     Lookup::Miss(recording) => {
    ///         let codes = vec![1, 2, 3]; // reads here are recorded
    ///         recording.store(codes)
    ///     }
    /// };
    /// assert_eq!(codes, [1, 2, 3]);
    /// assert!(matches!(METRICS.begin(7), Lookup::Hit(_)));
    /// ```
    pub fn begin(&self, key: K) -> Lookup<'_, K, V> {
        let Some(core) = self.core() else {
            return Lookup::Miss(Recording::detached());
        };
        let lead = match core.find(&key) {
            Ok(v) => return Lookup::Hit(v),
            Err(resolve::Miss::Lead(lead)) => Some(lead),
            Err(resolve::Miss::Alone | resolve::Miss::Absent) => None,
        };
        core.counters.misses.add(1);
        Lookup::Miss(Recording::open(Arc::clone(core), key, lead))
    }

    /// Computes `fut` and stores its value for `key`, replacing the entry
    /// there is (a background refresh: stale-while-revalidate). Concurrent
    /// callers are not coalesced; the caller decides who refreshes.
    pub async fn refresh_async<R, O, F>(&self, key: K, fut: F) -> R
    where
        O: Outcome<R, Value = V>,
        F: Future<Output = R>,
    {
        let Some(core) = self.core() else {
            return fut.await;
        };
        let (result, reads) = recorder::computing(0, fut).await;
        core.finish::<R, O>(key, None, &result, reads, None);
        result
    }

    /// Stores a value the caller computed in [`record`](crate::record) or
    /// [`record_future`](crate::record_future), with what it read; replaces
    /// the entry there is. Nothing is stored if something it read was
    /// invalidated since (or this cache, its store or `key` was). Returns
    /// whether the value was stored.
    ///
    /// ```
    /// use ultracache::{invalidate, record, track, Cache, Trackable};
    ///
    /// #[derive(Trackable)]
    /// struct Post { id: i64 }
    ///
    /// static TITLES: Cache<i64, String> = Cache::new("titles-insert-recorded");
    /// let (title, read) = record(|| { track(&Post { id: 1 }); "Hello".to_owned() });
    /// invalidate(&Post { id: 1 }); // written while it was computed
    /// assert!(!TITLES.insert_recorded(1, title, &read));
    /// ```
    pub fn insert_recorded(&self, key: K, value: V, recorded: &Recorded) -> bool {
        match self.core() {
            Some(core) => core.publish(key, value, &recorded.0, None).is_some(),
            None => false,
        }
    }

    /// [`insert_recorded`](Self::insert_recorded), the value expiring after
    /// `timeout` (`None`: never) rather than the cache's timeout.
    #[cfg_attr(not(feature = "minijinja"), allow(dead_code))]
    pub(crate) fn insert_recorded_for(
        &self,
        key: K,
        value: V,
        recorded: &Recorded,
        timeout: Option<Duration>,
    ) -> bool {
        match self.core() {
            Some(core) => core
                .publish_for(key, value, &recorded.0, None, timeout)
                .is_some(),
            None => false,
        }
    }

    /// Stores `value` for `key`, replacing the entry there is: a value the
    /// caller *wrote* rather than computed, so it is stored whatever was
    /// invalidated before. It depends on `deps`: invalidating one drops it. A
    /// [`shared`](Self::shared) cache also writes it through to the shared
    /// tier, and returns once Redis has it (or the tier's timeout passed).
    ///
    /// Returns whether this process stored it (`false` when the cache's store
    /// is not configured, or when one of `deps` was invalidated meanwhile).
    ///
    /// ```
    /// use ultracache::Cache;
    ///
    /// static NAMES: Cache<u32, String> = Cache::new("names-by-id");
    /// assert!(NAMES.insert(1, "Ada".into(), &[]));
    /// assert_eq!(NAMES.get(&1).as_deref(), Some("Ada"));
    /// ```
    pub fn insert(&self, key: K, value: V, deps: &[Dep]) -> bool {
        self.write(key, value, deps, u64::MAX)
    }

    /// The async form of [`insert`](Self::insert): waits for the shared tier
    /// without blocking a thread.
    pub async fn insert_async(&self, key: K, value: V, deps: &[Dep]) -> bool {
        self.write_async(key, value, deps, u64::MAX).await
    }

    /// [`insert`](Self::insert), refused by the shared tier when one of `deps`
    /// was invalidated after its tick `since` (a later write won there), and
    /// then not stored here either.
    pub(crate) fn write(&self, key: K, value: V, deps: &[Dep], since: u64) -> bool {
        self.write_after(key, value, deps, since, versions().now())
    }

    /// [`write`](Self::write), stored here only if none of `deps` was
    /// invalidated after tick `basis` (the writer's own invalidation): of
    /// concurrent writes and deletes, the last to invalidate wins.
    pub(crate) fn write_after(
        &self,
        key: K,
        value: V,
        deps: &[Dep],
        since: u64,
        basis: u64,
    ) -> bool {
        let Some((core, reads)) = self.to_write(deps, basis) else {
            return false;
        };
        #[cfg(feature = "redis")]
        if let Some(shared) = &core.shared {
            if shared.store_now(&key, &value, &reads.deps, since) == Some(false) {
                return false;
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = since;
        core.publish(key, value, &reads, None).is_some()
    }

    /// What a write needs: the core, and the dependencies read now.
    fn to_write(&self, deps: &[Dep], basis: u64) -> Option<(&Arc<Core<K, V>>, Reads)> {
        let core = self.core()?;
        Some((core, Reads::of(deps.to_vec(), basis)))
    }

    /// The async form of [`write`](Self::write).
    pub(crate) async fn write_async(&self, key: K, value: V, deps: &[Dep], since: u64) -> bool {
        self.write_after_async(key, value, deps, since, versions().now())
            .await
    }

    /// The async form of [`write_after`](Self::write_after).
    pub(crate) async fn write_after_async(
        &self,
        key: K,
        value: V,
        deps: &[Dep],
        since: u64,
        basis: u64,
    ) -> bool {
        let Some((core, reads)) = self.to_write(deps, basis) else {
            return false;
        };
        #[cfg(feature = "redis")]
        if let Some(shared) = &core.shared {
            if shared
                .store_now_async(&key, &value, &reads.deps, since)
                .await
                == Some(false)
            {
                return false;
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = since;
        core.publish(key, value, &reads, None).is_some()
    }

    /// The live entries: key, value, time left and dependencies. Entries found
    /// expired are removed on the way.
    pub fn entries(&self) -> Vec<EntryInfo<K, V>> {
        let Some(core) = self.core() else {
            return Vec::new();
        };
        let slots = core.front.slots();
        let now = clock::now();
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if slot.expired(now) {
                slot.end(crate::entry::Cause::Expired);
                continue;
            }
            if !slot.state.is_live() {
                continue;
            }
            out.push(EntryInfo {
                key: slot.key.clone(),
                value: slot.value.clone(),
                expires_in: (slot.deadline != NEVER)
                    .then(|| Duration::from_nanos(slot.deadline.saturating_sub(now))),
                dependencies: slot.deps.to_vec(),
            });
        }
        out
    }

    /// Drops the entry for `key`, if any. A computation of `key` in flight
    /// (started before this call) is not stored.
    pub fn invalidate(&self, key: &K) {
        if let Some(core) = self.core() {
            core.invalidate_key(key);
        }
    }

    /// Drops the entry for `key` here and, for a shared cache, in the shared
    /// tier: bytes found unreadable.
    pub(crate) fn discard(&self, key: &K) {
        self.invalidate(key);
        #[cfg(feature = "redis")]
        if let Some(shared) = self.core().and_then(|c| c.shared.as_ref()) {
            shared.delete(key);
        }
    }

    /// Drops every entry of this cache. Computations in flight (started
    /// before this call) are not stored.
    pub fn invalidate_all(&self) {
        if let Some(core) = self.core() {
            core.clear();
        }
    }

    /// This cache's statistics.
    pub fn stats(&self) -> CacheStats {
        self.core()
            .map(|c| c.stats())
            .unwrap_or_else(|| CacheStats {
                name: self.name,
                module: self.module,
                store: self
                    .store
                    .unwrap_or(crate::config::DEFAULT_STORE)
                    .to_owned(),
                ..CacheStats::default()
            })
    }
}

/// One live entry, as [`Cache::entries`] lists it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EntryInfo<K, V> {
    /// Its key.
    pub key: K,
    /// Its value.
    pub value: V,
    /// Time until it expires; `None` for never.
    pub expires_in: Option<Duration>,
    /// What it was computed from.
    pub dependencies: Vec<Dep>,
}
