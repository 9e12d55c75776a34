//! Stores: where entries live. A store bounds its entries in number or in
//! bytes, and evicts the ones read least when it is full (a clock: an entry
//! read since the clock last passed it gets a second chance). An eviction
//! ends the entry in its cache and in the registry.
//!
//! An entry that ends for another reason (invalidated, replaced, expired)
//! stops counting as an entry at once, but its place in the store's queue
//! is left as a tombstone: the store drops it when it next passes it, when
//! tombstones are half of a shard's queue, when they hold an eighth of its
//! bound and the room is needed, or on [`run_pending_tasks`]
//! (crate::run_pending_tasks). An invalidation so touches neither the
//! store's lock nor its queue; the slots it ends stay in their cache's map
//! (never served) until their tombstone is dropped
//! ([`Entry::bury`](crate::entry::Entry::bury)), so that the invalidation
//! does not pay for the map's removals either. A tombstone holds memory
//! until then, so it counts against the bound: what a store holds, live
//! or ended, stays within it.
//!
//! In a store bounded in bytes an entry weighs its key's and value's heap
//! and its bookkeeping (its slot, its places in the maps and the queue,
//! its links in the registry), at least `max_bytes / max_entries`. Values
//! its caches keep past their timeout (`stale_if_error`) count within the
//! bound too: new entries evict for the room they take.
//!
//! Expiry is the caches' own: an entry past its time is never served, and
//! leaves when it is next looked up, when [`run_pending_tasks`]
//! (crate::run_pending_tasks) sweeps, or when the store evicts it for room.

mod shard;

use std::sync::Arc;
use std::time::Duration;

use self::shard::{Shard, Swept, Weigh};
use crate::config::StoreConfig;
use crate::entry::{Cause, Entry};

/// Entries a store holds when its capacity is not configured.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// A shard holds at least this many entries (a store smaller than two of
/// them has one shard, and its bound is exact in the order it evicts).
const MIN_SHARD: u64 = 64;

pub(crate) struct Store {
    pub(crate) name: String,
    shards: Box<[Shard]>,
    weigh: Weigh,
    pub(crate) default_timeout: Option<Duration>,
    /// Its byte bound, when it has one.
    pub(crate) max_bytes: Option<u64>,
    /// The tick of the last `clear_store` of this store.
    pub(crate) cleared: crate::sync::AtomicU64,
    /// What its caches keep past their timeout for `stale_if_error`, in
    /// bytes: together, at most a quarter of a byte bound, and counted
    /// within it (the entries fit in the rest).
    pub(crate) kept: crate::sync::AtomicU64,
    /// Its caches that keep values past their timeout: each's share of
    /// that quarter.
    pub(crate) keepers: crate::sync::AtomicU64,
}

impl Store {
    pub(crate) fn new(name: &str, config: &StoreConfig) -> Self {
        let entries_bound = config.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES).max(1);
        let (capacity, weigh, items) = match config.max_bytes {
            Some(bytes) => {
                // An entry weighs at least bytes/entries: staying under the
                // byte bound then also keeps the count under the entry bound.
                let floor = (bytes / entries_bound).max(1);
                let floor = u32::try_from(floor).unwrap_or(u32::MAX);
                let items = bytes / u64::from(floor);
                (bytes.max(1), Weigh(Some(floor)), items)
            }
            None => (entries_bound, Weigh(None), entries_bound),
        };
        let n = (items / MIN_SHARD).clamp(1, crate::sync::core_shards() as u64);
        // A power of two (rounded down), so that `id & mask` picks one.
        let n = 1 << n.ilog2();
        let shards = (0..n)
            .map(|i| Shard::new(capacity / n + u64::from(i < capacity % n)))
            .collect();
        Store {
            name: name.to_owned(),
            shards,
            weigh,
            default_timeout: config.default_timeout,
            max_bytes: config.max_bytes,
            cleared: crate::sync::AtomicU64::new(0),
            kept: crate::sync::AtomicU64::new(0),
            keepers: crate::sync::AtomicU64::new(0),
        }
    }

    fn shard(&self, id: u64) -> &Shard {
        // Ids are addresses (a slot's), so mixed: their low bits repeat.
        &self.shards[(crate::dep::mix(id) as usize) & (self.shards.len() - 1)]
    }

    /// Takes `entry` in, evicting what the bound needs; the evicted entries
    /// end (their hooks run) once the store's lock is released.
    pub(crate) fn insert(&self, entry: Arc<dyn Entry>) {
        // Values kept past their timeout hold part of a byte bound: each
        // shard gives up its share of them.
        let reserved = match self.max_bytes {
            Some(_) => {
                self.kept.load(std::sync::atomic::Ordering::SeqCst) / self.shards.len() as u64
            }
            None => 0,
        };
        let reserved = i64::try_from(reserved).unwrap_or(i64::MAX);
        self.shard(entry.id())
            .insert(entry, self.weigh, reserved)
            .finish();
    }

    /// An entry that ended elsewhere no longer counts against the bound
    /// (once, however many times it is called, and not if the store let go
    /// of it first). Its place in the queue is swept later.
    pub(crate) fn release(&self, entry: &dyn Entry) {
        if entry.mark().leave() {
            self.shard(entry.id()).left(self.weigh.of(entry));
        }
    }

    /// Drops the tombstones of ended entries now (their memory returns).
    pub(crate) fn sweep(&self) {
        let mut swept = Swept::default();
        for shard in self.shards.iter() {
            shard.sweep(self.weigh, &mut swept);
        }
        swept.finish();
    }

    /// Ends every entry it holds.
    pub(crate) fn clear(&self) {
        let mut ending = Vec::new();
        let mut swept = Swept::default();
        for shard in self.shards.iter() {
            shard.take_all(self.weigh, &mut ending, &mut swept);
        }
        swept.finish();
        crate::entry::each_then_unwind(ending, |entry| entry.kill(Cause::Cleared));
    }

    /// The weight of the entries it holds (for tests).
    #[cfg(test)]
    fn weight(&self) -> i64 {
        self.shards.iter().map(Shard::weight).sum()
    }

    /// The weight of the entries and tombstones it holds (for tests).
    #[cfg(test)]
    fn held(&self) -> i64 {
        self.shards.iter().map(Shard::held).sum()
    }
}

#[cfg(test)]
mod tests;
