//! The core of one cache: its front map (the hit path), its computations in
//! flight, its store, and publishing through the [`protocol`].

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::front::{Found, Front};
use super::outcome::{CacheKey, CacheValue};
use super::slot::Slot;
use crate::clock::{self, NEVER};
use crate::dep::mix;
use crate::entry::{next_id, Cause, Entry};
use crate::flight::Flight;
use crate::mark::Mark;
use crate::protocol::{self, Guards};
use crate::recorder::{self, Reads};
use crate::registry::registry;
use crate::runtime::CacheHandle;
use crate::state::State;
use crate::stats::{CacheStats, Counters};
use crate::store::Store;
use crate::sync::AtomicU64;
use crate::versions::versions;

pub(super) type Hasher = foldhash::fast::RandomState;

/// The computations in progress, by key.
type Flights<K, V> = HashMap<K, Arc<Flight<Slot<K, V>>>, Hasher>;

pub(crate) struct Core<K, V> {
    pub(super) name: &'static str,
    pub(super) module: &'static str,
    pub(super) front: Front<K, V>,
    pub(super) flights: Mutex<Flights<K, V>>,
    pub(super) store: Arc<Store>,
    pub(super) timeout: Option<Duration>,
    pub(super) weigher: Option<fn(&V) -> usize>,
    /// Estimates a key's heap (a page's URL, a `String` argument).
    pub(super) key_weigher: Option<fn(&K) -> usize>,
    pub(super) counters: Counters,
    pub(super) hit_metric: crate::telemetry::HitCounter,
    pub(super) on_invalidated: Option<fn(&K, &V)>,
    /// The tick of the last `invalidate_all`.
    pub(super) cleared: AtomicU64,
    /// Orders revealing an entry against versioning its key or the cache.
    pub(super) reveal: Mutex<()>,
    /// Hashes keys into version keys (`Cache::invalidate`), after
    /// `key_salt`, unique per cache: the keys of two caches never share
    /// version keys but by a 64-bit collision.
    pub(super) keys: Hasher,
    pub(super) key_salt: u64,
    #[cfg(feature = "redis")]
    pub(super) shared: Option<crate::tier::Shared<K, V>>,
    /// Expired values kept to serve when computing them again fails.
    pub(super) grace: Option<super::grace::Grace<K, V>>,
}

impl<K: CacheKey, V: CacheValue> Core<K, V> {
    pub(super) fn new(
        name: &'static str,
        module: &'static str,
        store: Arc<Store>,
        timeout: Option<Duration>,
        weigher: Option<fn(&V) -> usize>,
        on_invalidated: Option<fn(&K, &V)>,
    ) -> Self {
        Core {
            name,
            module,
            front: Front::new(Hasher::default()),
            flights: Mutex::new(HashMap::with_hasher(Hasher::default())),
            store,
            timeout,
            weigher,
            key_weigher: None,
            counters: Counters::default(),
            hit_metric: crate::telemetry::HitCounter::new(name),
            on_invalidated,
            cleared: AtomicU64::new(0),
            reveal: Mutex::new(()),
            keys: Hasher::default(),
            key_salt: next_id(),
            #[cfg(feature = "redis")]
            shared: None,
            grace: None,
        }
    }

    fn lock_reveal(&self) -> MutexGuard<'_, ()> {
        self.reveal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn lock_flights(&self) -> MutexGuard<'_, Flights<K, V>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn unlink(&self, key: &K, id: u64) {
        self.front.remove(key, id);
    }

    /// Takes an ended `slot` out of the front map if it lingers there (a
    /// batched invalidation leaves its slots for the store's sweep).
    pub(super) fn unlink_slot(&self, slot: &Slot<K, V>) {
        if slot.mark.take_linger() {
            self.unlink(&slot.key, slot.id());
        }
    }

    /// The version key of `key` in this cache.
    pub(super) fn key_version(&self, key: &K) -> u64 {
        let mut h = self.keys.build_hasher();
        std::hash::Hasher::write_u64(&mut h, self.key_salt);
        key.hash(&mut h);
        mix(std::hash::Hasher::finish(&h))
    }

    /// The hit path (inlined into each caller: a call and its frame cost
    /// as much as the rest of a hit).
    #[inline(always)]
    pub(super) fn lookup<Q>(&self, key: &Q) -> Option<V>
    where
        Q: std::hash::Hash + equivalent::Equivalent<K> + ?Sized,
    {
        let guard = self.front.guard();
        let slot = self.front.get(key, &guard)?;
        if slot.live() {
            self.hit(&slot, || slot.arc());
            return Some(slot.value.clone());
        }
        self.not_live(&slot);
        None
    }

    /// A slot the hit path found but may not return: ended here if it is
    /// past its deadline, taken out if it ended and lingers.
    #[cold]
    #[inline(never)]
    fn not_live(&self, found: &Found<'_, K, V>) {
        // Counted: taking it out of the map retires the map's reference.
        let slot = found.arc();
        if slot.expired(clock::now()) {
            slot.end(Cause::Expired);
        } else if slot.ended.load(SeqCst) {
            self.unlink_slot(&slot);
        }
    }

    /// Counts a hit on `slot`, and records it inside a computation (`arc`:
    /// a counted reference to it, taken only then).
    #[inline]
    pub(super) fn hit(&self, slot: &Slot<K, V>, arc: impl FnOnce() -> Arc<Slot<K, V>>) {
        if recorder::recording() {
            Self::record_hit(arc());
        }
        slot.mark.see();
        if self
            .counters
            .hits
            .add(1)
            .is_multiple_of(crate::telemetry::HIT_BATCH)
        {
            self.hit_metric();
        }
    }

    /// A hit inside a computation being recorded.
    #[cold]
    #[inline(never)]
    fn record_hit(slot: Arc<Slot<K, V>>) {
        recorder::track_hit(slot as Arc<dyn Entry>);
    }

    /// One hit in [`HIT_BATCH`](crate::telemetry::HIT_BATCH): the metric
    /// hears of them.
    #[cold]
    #[inline(never)]
    fn hit_metric(&self) {
        self.hit_metric.add(crate::telemetry::HIT_BATCH);
    }

    /// The value a finished flight left, if it is still good.
    pub(super) fn take(&self, slot: &Arc<Slot<K, V>>) -> Option<V> {
        if !slot.live() {
            return None;
        }
        self.hit(slot, || Arc::clone(slot));
        Some(slot.value.clone())
    }

    /// Publishes a computed value through the [`protocol`]: stored and live
    /// only if nothing it read was invalidated since it was read.
    pub(super) fn publish(
        self: &Arc<Self>,
        key: K,
        value: V,
        reads: &Reads,
        heap: Option<usize>,
    ) -> Option<Arc<Slot<K, V>>> {
        self.publish_for(key, value, reads, heap, self.timeout)
    }

    /// [`publish`](Self::publish), expiring after `timeout` rather than the
    /// cache's timeout (`None`: never).
    pub(super) fn publish_for(
        self: &Arc<Self>,
        key: K,
        value: V,
        reads: &Reads,
        heap: Option<usize>,
        timeout: Option<Duration>,
    ) -> Option<Arc<Slot<K, V>>> {
        if crate::transaction::active() {
            // Computed inside an open database transaction: it may have read
            // writes that are not committed (and may never be).
            self.counters.stale.add(1);
            return None;
        }
        let heap = heap.or_else(|| self.weigher.map(|w| w(&value)));
        let key_heap = self.key_weigher.map_or(0, |w| w(&key));
        let deps = reads.all_deps();
        let weight = super::slot::footprint::<K, V>(deps.len())
            .saturating_add(heap.unwrap_or(0))
            .saturating_add(key_heap);
        let key_version = self.key_version(&key);
        let slot = Arc::new(Slot {
            key,
            value,
            deps: deps.into(),
            basis: reads.oldest_basis(),
            deadline: clock::deadline(timeout),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            state: State::pending(),
            ended: AtomicBool::new(false),
            mark: Mark::new(),
            owner: Arc::downgrade(self),
        });
        let entry: Arc<dyn Entry> = Arc::clone(&slot) as Arc<dyn Entry>;
        let v = versions();
        let staged = protocol::stage(v, registry(), &entry, reads, || {
            self.store.insert(Arc::clone(&entry));
        });
        // Entered before the reveal lock: what the insert retires is let go
        // (and a value's drop runs) after the lock is released.
        let _pin = self.front.guard();
        let mut replaced = None;
        let revealed = staged && {
            let _reveal = self.lock_reveal();
            let guards = Guards {
                cleared: [Some(&self.cleared), Some(&self.store.cleared)],
                key: Some(key_version),
            };
            protocol::reveal(v, &*entry, reads.basis, &guards) && {
                replaced = self.front.insert(Arc::clone(&slot));
                true
            }
        };
        if let Some(old) = replaced {
            old.end(Cause::Replaced);
        }
        if !revealed {
            self.counters.stale.add(1);
            crate::telemetry::stale(self.name);
            // Its place in the store, if it was put there, is a tombstone.
            slot.end(Cause::Stale);
            return None;
        }
        if !slot.state.is_live() {
            // Invalidated between revealing and here: its end may have
            // looked in the front map before it was there.
            self.unlink(&slot.key, slot.id());
            return None;
        }
        self.counters.inserts.add(1);
        crate::telemetry::insert(self.name, slot.deps.len());
        Some(slot)
    }

    /// Passes a finished computation on to the enclosing frame: its entry
    /// when it was stored (the enclosing value is as fresh as it), else what
    /// it read.
    pub(super) fn pass_on(slot: Option<&Arc<Slot<K, V>>>, reads: Reads) {
        match slot {
            Some(slot) => recorder::track_hit(Arc::clone(slot) as Arc<dyn Entry>),
            None => recorder::track_reads(reads),
        }
    }

    /// Bookkeeping when a slot of this cache ends.
    pub(super) fn ended(&self, cause: Cause, key: &K, value: &V) {
        if matches!(cause, Cause::Invalidated | Cause::Cleared) {
            if let Some(hook) = self.on_invalidated {
                hook(key, value);
            }
        }
        self.ended_many(cause, 1);
    }

    /// Counts `n` slots of this cache ended for `cause`.
    pub(super) fn ended_many(&self, cause: Cause, n: u64) {
        if n == 0 {
            return;
        }
        crate::telemetry::dropped(self.name, cause, n);
        let counters = &self.counters;
        let _ = match cause {
            Cause::Invalidated | Cause::Cleared => counters.invalidations.add(n),
            Cause::Evicted => counters.evictions.add(n),
            Cause::Expired => counters.expirations.add(n),
            Cause::Stale | Cause::Replaced => 0,
        };
    }

    /// Drops the entry for `key`; a computation of it in flight is not stored.
    pub(super) fn invalidate_key(&self, key: &K) {
        {
            let _reveal = self.lock_reveal();
            let v = versions();
            v.record(self.key_version(key), v.next());
        }
        let slot = {
            let guard = self.front.guard();
            self.front.get(key, &guard).map(|found| found.arc())
        };
        if let Some(slot) = slot {
            slot.end(Cause::Invalidated);
        }
    }

    fn slots(&self) -> Vec<Arc<Slot<K, V>>> {
        self.front.slots()
    }
}

impl<K: CacheKey, V: CacheValue> CacheHandle for Core<K, V> {
    fn stats(&self) -> CacheStats {
        let c = &self.counters;
        // Live slots only: an invalidated one may linger in the map until
        // its store sweeps it.
        let (mut entries, mut bytes) = (0, 0);
        self.front.for_each(&self.front.guard(), |slot| {
            if slot.state.is_live() {
                entries += 1;
                bytes += u64::from(slot.weight);
            }
        });
        let (kept, kept_bytes) = self.grace.as_ref().map_or((0, 0), |g| {
            let (n, bytes) = g.kept();
            (n as u64, bytes)
        });
        CacheStats {
            name: self.name,
            module: self.module,
            store: self.store.name.clone(),
            entries,
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
            served_stale: c.served_stale.get(),
            kept,
            kept_bytes,
        }
    }

    fn sweep_expired(&self) {
        let now = clock::now();
        for slot in self.slots() {
            if slot.deadline != NEVER && now >= slot.deadline {
                slot.end(Cause::Expired);
            }
            if slot.ended.load(SeqCst) {
                self.unlink_slot(&slot);
            }
        }
    }

    /// Drops every entry; computations in flight are not stored.
    fn clear(&self) {
        {
            let _reveal = self.lock_reveal();
            crate::sync::raise_u64(&self.cleared, versions().next());
        }
        crate::entry::each_then_unwind(self.slots(), |slot| {
            // One that lingers has ended already: only taken out.
            self.unlink_slot(&slot);
            slot.end(Cause::Cleared);
        });
    }
}
