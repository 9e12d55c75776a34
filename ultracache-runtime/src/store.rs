//! Stores: where entries live. Each named store is a moka cache (the store of
//! record: capacity in entries or bytes, per-entry expiry, an eviction
//! listener that keeps caches and the registry in step).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::sync::Cache as Moka;
use moka::Expiry;

use crate::config::StoreConfig;
use crate::entry::{Cause, Entry};

/// Entries a store holds when its capacity is not configured.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

pub(crate) struct Store {
    pub(crate) name: String,
    pub(crate) entries: Moka<u64, Arc<dyn Entry>>,
    pub(crate) default_timeout: Option<Duration>,
    /// The tick of the last `clear_store` of this store.
    pub(crate) cleared: crate::sync::AtomicU64,
}

struct EntryExpiry;

impl Expiry<u64, Arc<dyn Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _id: &u64,
        entry: &Arc<dyn Entry>,
        created_at: Instant,
    ) -> Option<Duration> {
        entry
            .expires_at()
            .map(|t| t.saturating_duration_since(created_at))
    }
}

impl Store {
    pub(crate) fn new(name: &str, config: &StoreConfig) -> Self {
        let builder = Moka::builder()
            .name(name)
            .expire_after(EntryExpiry)
            .eviction_listener(|_id, entry: Arc<dyn Entry>, cause| {
                entry.kill(match cause {
                    RemovalCause::Expired => Cause::Expired,
                    RemovalCause::Size => Cause::Evicted,
                    RemovalCause::Replaced => Cause::Replaced,
                    RemovalCause::Explicit => Cause::Invalidated,
                });
            });
        let entries = match (config.max_entries, config.max_bytes) {
            (entries, Some(bytes)) => {
                // An entry weighs at least bytes/entries: staying under the byte
                // bound then also keeps the count under the entry bound.
                let floor = (bytes / entries.unwrap_or(DEFAULT_MAX_ENTRIES).max(1)).max(1);
                let floor = u32::try_from(floor).unwrap_or(u32::MAX);
                builder
                    .max_capacity(bytes)
                    .weigher(move |_id, entry: &Arc<dyn Entry>| entry.weight().max(floor))
                    .build()
            }
            (entries, None) => builder
                .max_capacity(entries.unwrap_or(DEFAULT_MAX_ENTRIES))
                .build(),
        };
        Store {
            name: name.to_owned(),
            entries,
            default_timeout: config.default_timeout,
            cleared: crate::sync::AtomicU64::new(0),
        }
    }

    pub(crate) fn insert(&self, entry: Arc<dyn Entry>) {
        self.entries.insert(entry.id(), entry);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.entries.invalidate(&id);
    }

    /// Lets the store's policy see a read (sampled on the hit path).
    pub(crate) fn touch(&self, id: u64) {
        let _ = self.entries.get(&id);
    }

    pub(crate) fn clear(&self) {
        for (_, entry) in self.entries.iter() {
            entry.kill(Cause::Cleared);
        }
        self.entries.invalidate_all();
        self.entries.run_pending_tasks();
    }
}
