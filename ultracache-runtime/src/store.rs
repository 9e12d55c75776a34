//! Stores: where entries live. Each named store is a quick_cache cache (the
//! store of record: capacity in entries or bytes, and an eviction policy that
//! keeps the entries read often), whose evictions end the entries in their
//! caches and in the registry.
//!
//! Expiry is the caches' own: an entry past its time is never served, and
//! leaves when it is next looked up, when [`run_pending_tasks`]
//! (crate::run_pending_tasks) sweeps, or when the store evicts it for room.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache as Quick;
use quick_cache::{Lifecycle, Weighter};

use crate::config::StoreConfig;
use crate::entry::{Cause, Entry};

/// Entries a store holds when its capacity is not configured.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

type Entries = Quick<u64, Arc<dyn Entry>, Weigh, foldhash::fast::RandomState, Evictions>;

pub(crate) struct Store {
    pub(crate) name: String,
    entries: Entries,
    pub(crate) default_timeout: Option<Duration>,
    /// Its byte bound, when it has one.
    pub(crate) max_bytes: Option<u64>,
    /// The tick of the last `clear_store` of this store.
    pub(crate) cleared: crate::sync::AtomicU64,
}

/// An entry's weight: 1 in a store bounded in entries; its bytes (at least
/// `floor`) in one bounded in bytes.
#[derive(Clone)]
struct Weigh {
    floor: Option<u32>,
}

impl Weighter<u64, Arc<dyn Entry>> for Weigh {
    fn weight(&self, _id: &u64, entry: &Arc<dyn Entry>) -> u64 {
        match self.floor {
            None => 1,
            Some(floor) => u64::from(entry.weight().max(floor)),
        }
    }
}

/// Ends the entries a store evicted, once its lock is released.
#[derive(Clone, Default)]
struct Evictions;

/// The entries one store operation evicted.
#[derive(Default)]
struct Evicted(Vec<Arc<dyn Entry>>);

impl Drop for Evicted {
    fn drop(&mut self) {
        for entry in self.0.drain(..) {
            entry.kill(Cause::Evicted);
        }
    }
}

impl Lifecycle<u64, Arc<dyn Entry>> for Evictions {
    type RequestState = Evicted;

    fn on_evict(&self, evicted: &mut Evicted, _id: u64, entry: Arc<dyn Entry>) {
        evicted.0.push(entry);
    }
}

/// Empties the store's map when dropped: after a clear, however its hooks
/// ended.
struct ClearOnDrop<'a>(&'a Entries);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
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
                (bytes.max(1), Weigh { floor: Some(floor) }, items)
            }
            None => (entries_bound, Weigh { floor: None }, entries_bound),
        };
        Store {
            name: name.to_owned(),
            entries: Quick::with(
                usize::try_from(items).unwrap_or(usize::MAX).max(1),
                capacity,
                weigh,
                foldhash::fast::RandomState::default(),
                Evictions,
            ),
            default_timeout: config.default_timeout,
            max_bytes: config.max_bytes,
            cleared: crate::sync::AtomicU64::new(0),
        }
    }

    pub(crate) fn insert(&self, entry: Arc<dyn Entry>) {
        self.entries.insert(entry.id(), entry);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.entries.remove(&id);
    }

    /// Lets the store's policy see a read (sampled on the hit path).
    pub(crate) fn touch(&self, id: u64) {
        let _ = self.entries.get(&id);
    }

    pub(crate) fn clear(&self) {
        let all: Vec<Arc<dyn Entry>> = self.entries.iter().map(|(_, entry)| entry).collect();
        let _cleared = ClearOnDrop(&self.entries);
        crate::entry::each_then_unwind(all, |entry| entry.kill(Cause::Cleared));
    }
}
