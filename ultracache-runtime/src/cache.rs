//! Caches: typed maps from a key to an entry, with single flight, recording
//! and the publish protocol that keeps stale values out.
//!
//! A hit is a lock-free read of the cache's front map (papaya), a liveness
//! check (not invalidated, not expired) and a clone of the value. The entry
//! also lives in its store (moka, the store of record), which bounds memory,
//! expires and evicts; its eviction listener takes the entry out of the front
//! and the registry.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::clock::{self, Nanos, NEVER};
use crate::dep::Dep;
use crate::entry::{next_id, Cause, Entry};
use crate::flight::{Flight, Leader};
use crate::generation::{self, Snapshot};
use crate::recorder;
use crate::registry::registry;
use crate::runtime::{self, CacheHandle};
use crate::stats::{CacheStats, Counters};
use crate::store::Store;

type Hasher = foldhash::fast::RandomState;

/// The computations in progress, by key.
type Flights<K, V> = HashMap<K, Arc<Flight<Slot<K, V>>>, Hasher>;

/// What a cache key must be: hashable, comparable, clonable, shareable and
/// owned. Every such type is one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a cache key",
    label = "this key must be `Hash + Eq + Clone + Send + Sync + 'static`",
    note = "choose the key with `key = …` (e.g. an id or a tuple of ids), or leave an argument out with `skip(…)`"
)]
pub trait CacheKey: Hash + Eq + Clone + Send + Sync + 'static {}
impl<T: Hash + Eq + Clone + Send + Sync + 'static> CacheKey for T {}

/// What a cached value must be: clonable (a hit returns a clone), shareable and
/// owned. Every such type is one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached",
    label = "a cached value must be `Clone + Send + Sync + 'static`",
    note = "derive `Clone`, or return an `Arc` of the value"
)]
pub trait CacheValue: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> CacheValue for T {}

/// How long a cache keeps its entries.
#[derive(Clone, Copy, Debug)]
pub enum Timeout {
    /// The default timeout of the cache's store.
    StoreDefault,
    /// Until invalidated or evicted.
    Forever,
    /// A fixed duration.
    After(Duration),
    /// A duration computed once, when the cache is first used.
    Computed(fn() -> Duration),
}

impl Timeout {
    /// The duration entries live, given the store's default; `None` for ever.
    pub fn resolve(&self, store_default: Option<Duration>) -> Option<Duration> {
        match self {
            Timeout::StoreDefault => store_default,
            Timeout::Forever => None,
            Timeout::After(d) => Some(*d),
            Timeout::Computed(f) => Some(f()),
        }
    }
}

/// How a computation's result maps to the value stored: every result
/// ([`Plain`]), or only the `Ok` of a `Result` ([`OkOnly`]).
pub trait Outcome<R> {
    /// The part of the result that is stored.
    type Value;
    /// The value to store, if this result is stored at all.
    fn value(result: &R) -> Option<&Self::Value>;
    /// The result a hit returns.
    fn wrap(value: Self::Value) -> R;
    /// What callers that waited for a computation return when its result
    /// was not stored: `None` (the default) has each compute on its own;
    /// `Some` shares a definitive answer ("there is no such object").
    #[doc(hidden)]
    fn shared_miss() -> Option<R> {
        None
    }
}

/// Every result is stored (including `None`).
#[derive(Clone, Copy, Debug)]
pub struct Plain;

/// Only `Ok` values are stored; an `Err` is recomputed next time.
#[derive(Clone, Copy, Debug)]
pub struct OkOnly;

impl<R> Outcome<R> for Plain {
    type Value = R;
    fn value(result: &R) -> Option<&R> {
        Some(result)
    }
    fn wrap(value: R) -> R {
        value
    }
}

impl<T, E> Outcome<Result<T, E>> for OkOnly {
    type Value = T;
    fn value(result: &Result<T, E>) -> Option<&T> {
        result.as_ref().ok()
    }
    fn wrap(value: T) -> Result<T, E> {
        Ok(value)
    }
}

struct Slot<K, V> {
    id: u64,
    key: K,
    value: V,
    deps: Box<[Dep]>,
    /// For the store's expiry policy.
    expires_at: Option<Instant>,
    /// For the hit path, on the coarse clock.
    deadline: Nanos,
    weight: u32,
    dead: AtomicBool,
    owner: Weak<Core<K, V>>,
}

impl<K: CacheKey, V: CacheValue> Slot<K, V> {
    fn end(&self, cause: Cause, remove_from_store: bool) {
        if self.dead.swap(true, SeqCst) {
            return;
        }
        if let Some(core) = self.owner.upgrade() {
            core.unlink(&self.key, self.id);
            if remove_from_store {
                core.store.remove(self.id);
            }
            let counters = &core.counters;
            if matches!(cause, Cause::Invalidated | Cause::Cleared) {
                if let Some(hook) = core.on_invalidated {
                    hook(&self.key, &self.value);
                }
            }
            crate::telemetry::dropped(core.name, cause);
            let _ = match cause {
                Cause::Invalidated | Cause::Cleared => counters.invalidations.add(1),
                Cause::Evicted => counters.evictions.add(1),
                Cause::Expired => counters.expirations.add(1),
                Cause::Stale | Cause::Replaced => 0,
            };
        }
        registry().unregister(self.id, &self.deps);
    }
}

impl<K: CacheKey, V: CacheValue> Entry for Slot<K, V> {
    fn id(&self) -> u64 {
        self.id
    }
    fn deps(&self) -> &[Dep] {
        &self.deps
    }
    fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn kill(&self, cause: Cause) {
        // Evictions and expiries come from the store's listener: the store has
        // let go of the entry already.
        self.end(cause, !matches!(cause, Cause::Evicted | Cause::Expired));
    }
}

enum Join<K: CacheKey, V: CacheValue> {
    Hit(V),
    Wait(Arc<Flight<Slot<K, V>>>),
    Lead(Lead<K, V>),
}

/// The one caller computing a key. Dropping it unfinished (panic,
/// cancellation) releases the waiters, who look again.
struct Lead<K: CacheKey, V: CacheValue> {
    core: Arc<Core<K, V>>,
    key: K,
    flight: Arc<Flight<Slot<K, V>>>,
    finished: bool,
}

impl<K: CacheKey, V: CacheValue> Lead<K, V> {
    fn finish(mut self, slot: Option<Arc<Slot<K, V>>>) {
        self.finished = true;
        self.release(slot);
    }

    /// Finishes with a definitive "nothing", computed from `deps`: waiters
    /// that share it return it, depending on `deps` too.
    fn finish_absent(mut self, deps: Box<[Dep]>) {
        self.finished = true;
        self.flight.mark_absent(deps);
        self.release(None);
    }

    fn release(&self, slot: Option<Arc<Slot<K, V>>>) {
        {
            let mut flights = self.core.lock_flights();
            if flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.key);
            }
        }
        self.flight.finish(slot);
    }
}

impl<K: CacheKey, V: CacheValue> Drop for Lead<K, V> {
    fn drop(&mut self) {
        if !self.finished {
            self.release(None);
        }
    }
}

/// What a write needs: the core, its snapshot, the dependencies in order.
type ToWrite<'a, K, V> = (&'a Arc<Core<K, V>>, u64, Box<[Dep]>);

/// Why `find` found no value: who computes.
enum Miss<K: CacheKey, V: CacheValue> {
    /// This caller, as the leader of a flight.
    Lead(Lead<K, V>),
    /// This caller, on its own.
    Alone,
    /// Nobody: the leader this caller waited for found there is nothing.
    Absent,
}

pub(crate) struct Core<K, V> {
    name: &'static str,
    module: &'static str,
    front: papaya::HashMap<K, Arc<Slot<K, V>>, Hasher>,
    flights: Mutex<Flights<K, V>>,
    store: Arc<Store>,
    timeout: Option<Duration>,
    weigher: Option<fn(&V) -> usize>,
    counters: Counters,
    on_invalidated: Option<fn(&K, &V)>,
    #[cfg(feature = "redis")]
    shared: Option<crate::redis::Shared<K, V>>,
}

/// One hit in this many (per thread) is reported to the store's eviction
/// policy, so that it learns which entries are popular.
const TOUCH_EVERY: u64 = 256;

impl<K, V> Slot<K, V> {
    #[inline]
    fn live(&self) -> bool {
        !self.dead.load(SeqCst) && (self.deadline == NEVER || clock::now() < self.deadline)
    }
}

impl<K: CacheKey, V: CacheValue> Core<K, V> {
    fn lock_flights(&self) -> std::sync::MutexGuard<'_, Flights<K, V>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unlink(&self, key: &K, id: u64) {
        let guard = self.front.guard();
        let _ = self.front.remove_if(key, |_, s| s.id == id, &guard);
    }

    /// The hit path.
    #[inline]
    fn lookup(&self, key: &K) -> Option<V> {
        let guard = self.front.guard();
        let slot = self.front.get(key, &guard)?;
        if slot.live() {
            self.hit(slot);
            return Some(slot.value.clone());
        }
        if !slot.dead.load(SeqCst) {
            let slot = Arc::clone(slot);
            drop(guard);
            slot.end(Cause::Expired, true);
        }
        None
    }

    #[inline]
    fn hit(&self, slot: &Slot<K, V>) {
        if recorder::recording() {
            recorder::track_deps(&slot.deps);
        }
        if self.counters.hits.add(1).is_multiple_of(TOUCH_EVERY) {
            self.store.touch(slot.id);
            crate::telemetry::hits(self.name, crate::telemetry::HIT_BATCH);
        }
    }

    /// The value a finished flight left, if it is still good.
    fn take(&self, slot: Option<Arc<Slot<K, V>>>) -> Option<V> {
        let slot = slot?;
        if !slot.live() {
            return None;
        }
        self.hit(&slot);
        Some(slot.value.clone())
    }

    fn join(self: &Arc<Self>, key: &K, leader: Leader) -> Join<K, V> {
        let mut flights = self.lock_flights();
        // Looked up again under the lock: a leader publishes before it leaves.
        if let Some(v) = self.lookup(key) {
            return Join::Hit(v);
        }
        if let Some(flight) = flights.get(key) {
            return Join::Wait(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::new(leader));
        flights.insert(key.clone(), Arc::clone(&flight));
        Join::Lead(Lead {
            core: Arc::clone(self),
            key: key.clone(),
            flight,
            finished: false,
        })
    }

    /// Stores a computed value, unless one of its dependencies was invalidated
    /// since `start`. The entry is registered before that check, so an
    /// invalidation either is seen by the check or finds the entry.
    fn publish(
        self: &Arc<Self>,
        key: K,
        value: V,
        deps: Box<[Dep]>,
        start: u64,
        heap: Option<usize>,
    ) -> Option<Arc<Slot<K, V>>> {
        let heap = heap.or_else(|| self.weigher.map(|w| w(&value)));
        let weight = size_of::<Slot<K, V>>() + deps.len() * size_of::<Dep>() + heap.unwrap_or(0);
        let slot = Arc::new(Slot {
            id: next_id(),
            key,
            value,
            deps,
            expires_at: self.timeout.and_then(|t| Instant::now().checked_add(t)),
            deadline: clock::deadline(self.timeout),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            dead: AtomicBool::new(false),
            owner: Arc::downgrade(self),
        });
        let entry: Arc<dyn Entry> = Arc::clone(&slot) as Arc<dyn Entry>;
        registry().register(&entry);
        self.store.insert(entry);
        if generation::stale(&slot.deps, start) {
            self.counters.stale.add(1);
            crate::telemetry::stale(self.name);
            slot.end(Cause::Stale, true);
            return None;
        }
        let replaced = {
            let guard = self.front.guard();
            self.front
                .insert(slot.key.clone(), Arc::clone(&slot), &guard)
                .map(Arc::clone)
        };
        if let Some(old) = replaced {
            if old.id != slot.id {
                old.end(Cause::Replaced, true);
            }
        }
        if slot.dead.load(SeqCst) {
            self.unlink(&slot.key, slot.id);
            return None;
        }
        self.counters.inserts.add(1);
        crate::telemetry::insert(self.name, slot.deps.len());
        Some(slot)
    }

    /// Finds the value for `key`, or decides who computes it: this caller as
    /// the leader of a flight, or alone (when the leader it waited for stored
    /// nothing, or when a computation asks for its own key).
    fn find(self: &Arc<Self>, key: &K, me: Option<thread::ThreadId>) -> Result<V, Miss<K, V>> {
        if let Some(v) = self.lookup(key) {
            return Ok(v);
        }
        let leader = Leader::Thread(me.unwrap_or_else(|| thread::current().id()));
        match self.join(key, leader) {
            Join::Hit(v) => Ok(v),
            Join::Lead(lead) => Err(Miss::Lead(lead)),
            // A computation that asks for its own key would wait for itself.
            Join::Wait(flight) if flight.led_here(me) => Err(Miss::Alone),
            Join::Wait(flight) => {
                self.counters.coalesced.add(1);
                let slot = flight.wait();
                if let Some(v) = self.take(slot) {
                    return Ok(v);
                }
                match flight.absent() {
                    Some(deps) => {
                        recorder::track_deps(&deps);
                        Err(Miss::Absent)
                    }
                    // The leader failed, panicked or computed a stale value:
                    // compute alone rather than queue behind the next leader.
                    None => Err(Miss::Alone),
                }
            }
        }
    }

    /// Stores a finished computation's value and releases its waiters.
    fn finish<R, O: Outcome<R, Value = V>>(
        self: &Arc<Self>,
        key: K,
        lead: Option<Lead<K, V>>,
        result: &R,
        deps: Box<[Dep]>,
        start: u64,
        weigh: Option<fn(&R) -> usize>,
    ) {
        let heap = weigh.map(|w| w(result));
        let Some(value) = O::value(result) else {
            if let Some(lead) = lead {
                if O::shared_miss().is_some() {
                    lead.finish_absent(deps);
                } else {
                    lead.finish(None);
                }
            }
            return;
        };
        let slot = self.publish(key, value.clone(), deps, start, heap);
        if let Some(lead) = lead {
            lead.finish(slot);
        }
    }

    fn resolve<R, O: Outcome<R, Value = V>>(
        self: &Arc<Self>,
        key: K,
        weigh: Option<fn(&R) -> usize>,
        f: impl FnOnce() -> R,
    ) -> R {
        let lead = match self.find(&key, Some(thread::current().id())) {
            Ok(v) => return O::wrap(v),
            Err(Miss::Lead(lead)) => Some(lead),
            Err(Miss::Alone) => None,
            Err(Miss::Absent) => match O::shared_miss() {
                Some(r) => return r,
                None => None,
            },
        };
        let start = generation::snapshot();
        #[cfg(feature = "redis")]
        let since = match self.shared.as_ref().map(|s| s.fetch_blocking(&key)) {
            Some(crate::redis::Found::Hit(value, deps)) => {
                return O::wrap(self.shared_hit(key, lead, value, deps, start));
            }
            Some(crate::redis::Found::Miss { since }) => Some(since),
            _ => None,
        };
        self.counters.misses.add(1);
        crate::telemetry::miss(self.name);
        let (result, deps) = recorder::capture(f);
        #[cfg(feature = "redis")]
        self.store_shared::<R, O>(&key, &result, &deps, since);
        self.finish::<R, O>(key, lead, &result, deps, start, weigh);
        result
    }

    /// A value the shared tier had: it joins this process's store (with its
    /// dependencies, so invalidations reach it) and counts as a hit.
    #[cfg(feature = "redis")]
    fn shared_hit(
        self: &Arc<Self>,
        key: K,
        lead: Option<Lead<K, V>>,
        value: V,
        deps: Vec<Dep>,
        start: u64,
    ) -> V {
        let deps = recorder::normalize(deps);
        recorder::track_deps(&deps);
        self.counters.hits.add(1);
        self.counters.shared_hits.add(1);
        let slot = self.publish(key, value.clone(), deps, start, None);
        if let Some(lead) = lead {
            lead.finish(slot);
        }
        value
    }

    /// Offers a computed value to the shared tier (it refuses it there if
    /// something it read was invalidated since `since`).
    #[cfg(feature = "redis")]
    fn store_shared<R, O: Outcome<R, Value = V>>(
        &self,
        key: &K,
        result: &R,
        deps: &[Dep],
        since: Option<u64>,
    ) {
        if let (Some(shared), Some(since), Some(value)) = (&self.shared, since, O::value(result)) {
            shared.store(key, value, deps, since);
        }
    }

    async fn resolve_async<R, O, F>(
        self: &Arc<Self>,
        key: K,
        weigh: Option<fn(&R) -> usize>,
        fut: F,
    ) -> R
    where
        O: Outcome<R, Value = V>,
        F: Future<Output = R>,
    {
        if let Some(v) = self.lookup(&key) {
            return O::wrap(v);
        }
        let task = recorder::frame_id();
        let lead = match self.join(&key, Leader::Task(task)) {
            Join::Hit(v) => return O::wrap(v),
            Join::Lead(lead) => Some(lead),
            // Inside the computation that leads: it would wait for itself.
            Join::Wait(flight) if flight.led_here(None) => None,
            Join::Wait(flight) => {
                self.counters.coalesced.add(1);
                let slot = flight.wait_async().await;
                if let Some(v) = self.take(slot) {
                    return O::wrap(v);
                }
                match (flight.absent(), O::shared_miss()) {
                    (Some(deps), Some(r)) => {
                        recorder::track_deps(&deps);
                        return r;
                    }
                    // The leader stored nothing: compute alone.
                    _ => None,
                }
            }
        };
        let start = generation::snapshot();
        #[cfg(feature = "redis")]
        let since = match &self.shared {
            Some(shared) => match shared.fetch(&key).await {
                crate::redis::Found::Hit(value, deps) => {
                    return O::wrap(self.shared_hit(key, lead, value, deps, start));
                }
                crate::redis::Found::Miss { since } => Some(since),
                crate::redis::Found::Unavailable => None,
            },
            None => None,
        };
        self.counters.misses.add(1);
        crate::telemetry::miss(self.name);
        let (result, deps) = recorder::capture_future_as(task, fut).await;
        #[cfg(feature = "redis")]
        self.store_shared::<R, O>(&key, &result, &deps, since);
        self.finish::<R, O>(key, lead, &result, deps, start, weigh);
        result
    }
}

impl<K: CacheKey, V: CacheValue> CacheHandle for Core<K, V> {
    fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let bytes = {
            let guard = self.front.guard();
            self.front.values(&guard).map(|s| u64::from(s.weight)).sum()
        };
        CacheStats {
            name: self.name,
            module: self.module,
            store: self.store.name.clone(),
            entries: self.front.len() as u64,
            bytes,
            hits: c.hits.get(),
            misses: c.misses.get(),
            inserts: c.inserts.get(),
            invalidations: c.invalidations.get(),
            evictions: c.evictions.get(),
            expirations: c.expirations.get(),
            stale: c.stale.get(),
            coalesced: c.coalesced.get(),
            shared_hits: c.shared_hits.get(),
        }
    }

    fn sweep_expired(&self) {
        let now = clock::now();
        let expired: Vec<_> = {
            let guard = self.front.guard();
            self.front
                .values(&guard)
                .filter(|s| s.deadline != NEVER && now >= s.deadline)
                .map(Arc::clone)
                .collect()
        };
        for slot in expired {
            slot.end(Cause::Expired, true);
        }
    }

    fn clear(&self) {
        let slots: Vec<_> = {
            let guard = self.front.guard();
            self.front.values(&guard).map(Arc::clone).collect()
        };
        for slot in slots {
            slot.end(Cause::Cleared, true);
        }
    }
}

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
    on_invalidated: Option<fn(&K, &V)>,
    #[cfg(feature = "redis")]
    codec: Option<crate::redis::Codec<K, V>>,
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
            on_invalidated: None,
            #[cfg(feature = "redis")]
            codec: None,
            core: OnceLock::new(),
        }
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
            this.codec = Some(crate::redis::Codec::new());
            this
        }
        #[cfg(not(feature = "redis"))]
        self
    }

    /// Like [`shared`](Self::shared), for values that are the bytes of a `T`:
    /// the entries carry `T`'s fingerprint, so a changed `T` reads as a miss.
    pub(crate) const fn shared_as<T>(self) -> Self
    where
        K: serde::Serialize,
        V: serde::Serialize + serde::de::DeserializeOwned + 'static,
        T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        #[cfg(feature = "redis")]
        {
            let mut this = self;
            this.codec = Some(crate::redis::Codec::new().fingerprint_of::<T>());
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
            (Some(codec), Some(tier)) => Some(crate::redis::Shared {
                tier: Arc::clone(tier),
                codec,
                fingerprint: (codec.fingerprint)(),
                name: self.name,
                timeout,
            }),
            _ => None,
        };
        let core = Arc::new(Core {
            name: self.name,
            module: self.module,
            front: papaya::HashMap::builder().hasher(Hasher::default()).build(),
            flights: Mutex::new(HashMap::with_hasher(Hasher::default())),
            timeout,
            store,
            weigher: self.weigher,
            counters: Counters::default(),
            on_invalidated: self.on_invalidated,
            #[cfg(feature = "redis")]
            shared,
        });
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
    #[inline]
    pub fn get(&self, key: &K) -> Option<V> {
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
            let start = generation::snapshot();
            if let crate::redis::Found::Hit(value, deps) = shared.fetch(key).await {
                return Some(core.shared_hit(key.clone(), None, value, deps, start));
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
        let lead = match core.find(&key, Some(thread::current().id())) {
            Ok(v) => return Lookup::Hit(v),
            Err(Miss::Lead(lead)) => Some(lead),
            Err(Miss::Alone | Miss::Absent) => None,
        };
        core.counters.misses.add(1);
        Lookup::Miss(Recording::open(
            Arc::clone(core),
            key,
            lead,
            generation::snapshot(),
        ))
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
        let start = generation::snapshot();
        let (result, deps) = recorder::capture_future(fut).await;
        core.finish::<R, O>(key, None, &result, deps, start, None);
        result
    }

    /// Stores a value computed by the caller since `since`, with the
    /// dependencies it recorded (from [`capture`](crate::capture)); replaces
    /// the entry there is. Nothing is stored if one of `deps` was invalidated
    /// after `since`. Returns whether the value was stored.
    pub fn insert_computed(&self, key: K, value: V, deps: Box<[Dep]>, since: Snapshot) -> bool {
        match self.core() {
            Some(core) => core.publish(key, value, deps, since.0, None).is_some(),
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
        let Some((core, start, deps)) = self.to_write(deps) else {
            return false;
        };
        #[cfg(feature = "redis")]
        if let Some(shared) = &core.shared {
            if shared.store_now(&key, &value, &deps, since) == Some(false) {
                return false;
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = since;
        core.publish(key, value, deps, start, None).is_some()
    }

    /// What a write needs: the core, the snapshot it is taken at, the
    /// dependencies in order.
    fn to_write(&self, deps: &[Dep]) -> Option<ToWrite<'_, K, V>> {
        let core = self.core()?;
        Some((
            core,
            generation::snapshot(),
            recorder::normalize(deps.to_vec()),
        ))
    }

    /// The async form of [`write`](Self::write).
    pub(crate) async fn write_async(&self, key: K, value: V, deps: &[Dep], since: u64) -> bool {
        let Some((core, start, deps)) = self.to_write(deps) else {
            return false;
        };
        #[cfg(feature = "redis")]
        if let Some(shared) = &core.shared {
            if shared.store_now_async(&key, &value, &deps, since).await == Some(false) {
                return false;
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = since;
        core.publish(key, value, deps, start, None).is_some()
    }

    /// The live entries: key, value, time left and dependencies. Entries found
    /// expired are removed on the way.
    pub fn entries(&self) -> Vec<EntryInfo<K, V>> {
        let Some(core) = self.core() else {
            return Vec::new();
        };
        let slots: Vec<Arc<Slot<K, V>>> = {
            let guard = core.front.guard();
            core.front.values(&guard).map(Arc::clone).collect()
        };
        let now = clock::now();
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if slot.dead.load(SeqCst) {
                continue;
            }
            if slot.deadline != NEVER && now >= slot.deadline {
                slot.end(Cause::Expired, true);
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

    /// Drops the entry for `key`, if any.
    pub fn invalidate(&self, key: &K) {
        let Some(core) = self.core() else { return };
        let slot = {
            let guard = core.front.guard();
            core.front.get(key, &guard).map(Arc::clone)
        };
        if let Some(slot) = slot {
            slot.end(Cause::Invalidated, true);
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

    /// Drops every entry of this cache.
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

/// The result of [`Cache::begin`].
#[derive(Debug)]
pub enum Lookup<'a, K: CacheKey, V: CacheValue> {
    /// A live entry's value; its dependencies were recorded.
    Hit(V),
    /// No entry: compute the value, then [`Recording::store`] it.
    Miss(Recording<'a, K, V>),
}

/// A computation being recorded for [`Cache::begin`]. Reads on this thread
/// until [`store`](Self::store) are the entry's dependencies. Dropping it
/// without storing stores nothing (and lets waiting callers compute).
#[must_use = "call `store` with the computed value"]
pub struct Recording<'a, K: CacheKey, V: CacheValue> {
    target: Option<(Arc<Core<K, V>>, K)>,
    lead: Option<Lead<K, V>>,
    start: u64,
    open: bool,
    // The frame lives on this thread's stack of frames.
    _not_send: PhantomData<(*const (), &'a ())>,
}

impl<K: CacheKey, V: CacheValue> std::fmt::Debug for Recording<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

impl<K: CacheKey, V: CacheValue> Recording<'_, K, V> {
    fn open(core: Arc<Core<K, V>>, key: K, lead: Option<Lead<K, V>>, start: u64) -> Self {
        recorder::push_frame();
        Recording {
            target: Some((core, key)),
            lead,
            start,
            open: true,
            _not_send: PhantomData,
        }
    }

    /// A recording for a cache that has no store: it stores nothing.
    fn detached() -> Self {
        recorder::push_frame();
        Recording {
            target: None,
            lead: None,
            start: 0,
            open: true,
            _not_send: PhantomData,
        }
    }

    fn close(&mut self) -> Box<[Dep]> {
        self.open = false;
        let deps = recorder::normalize(recorder::pop_frame());
        recorder::track_deps(&deps);
        deps
    }

    /// Stores `value` with the dependencies recorded since the look-up, and
    /// returns it.
    pub fn store(mut self, value: V) -> V {
        let deps = self.close();
        if let Some((core, key)) = self.target.take() {
            let slot = core.publish(key, value.clone(), deps, self.start, None);
            if let Some(lead) = self.lead.take() {
                lead.finish(slot);
            }
        }
        value
    }
}

impl<K: CacheKey, V: CacheValue> Drop for Recording<'_, K, V> {
    fn drop(&mut self) {
        if self.open {
            self.close();
        }
    }
}
