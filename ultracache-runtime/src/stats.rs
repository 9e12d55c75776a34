//! Statistics: counters cheap enough for the hit path (striped per thread, so
//! two threads hitting one function never fight over a cache line).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

const STRIPES: usize = 8;

#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

/// A counter split across cache lines; each thread adds to its own stripe.
#[derive(Default)]
pub(crate) struct Counter([Stripe; STRIPES]);

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe: threads take stripes in turn, so up to `STRIPES`
/// threads never share one.
#[inline(always)]
fn stripe() -> usize {
    let s = STRIPE.get();
    if s != usize::MAX {
        s
    } else {
        assign_stripe()
    }
}

#[cold]
fn assign_stripe() -> usize {
    let s = NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES;
    STRIPE.set(s);
    s
}

impl Counter {
    /// Adds `n`; returns this thread's stripe's count before the addition.
    #[inline]
    pub(crate) fn add(&self, n: u64) -> u64 {
        self.0[stripe()].0.fetch_add(n, Relaxed)
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// The counters of one cache (one `#[cached]` function or one [`Cache`](crate::Cache)).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) inserts: Counter,
    pub(crate) invalidations: Counter,
    pub(crate) evictions: Counter,
    pub(crate) expirations: Counter,
    pub(crate) stale: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) shared_hits: Counter,
    pub(crate) served_stale: Counter,
}

/// A snapshot of one cache's statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// The function's (or cache's) name.
    pub name: &'static str,
    /// The module it is defined in.
    pub module: &'static str,
    /// The store its entries live in.
    pub store: String,
    /// Entries it holds now.
    pub entries: u64,
    /// The estimated memory of those entries: keys and values (with
    /// [`HeapSize`](crate::HeapSize) where known), dependency lists, and
    /// each entry's bookkeeping (its slot, its places in the cache's map
    /// and the store's queue, its links in the dependency registry).
    pub bytes: u64,
    /// Calls answered from the cache (including callers that waited for another
    /// caller's computation of the same key).
    pub hits: u64,
    /// Calls that ran the computation.
    pub misses: u64,
    /// Values stored.
    pub inserts: u64,
    /// Entries dropped because something they read was written.
    pub invalidations: u64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
    /// Entries dropped because their timeout passed.
    pub expirations: u64,
    /// Values not stored because a dependency was written while they were
    /// computed.
    pub stale: u64,
    /// Calls that missed while another caller computed the same key, and
    /// waited for it instead of computing too (single flight).
    pub coalesced: u64,
    /// Hits answered by the shared tier (Redis) after an in-process miss;
    /// included in `hits`.
    pub shared_hits: u64,
    /// Calls answered with a value past its timeout, within its grace,
    /// because computing it again failed ([`Cache::stale_if_error`](crate::Cache::stale_if_error)).
    pub served_stale: u64,
    /// Values past their timeout kept for their grace period (not in
    /// `entries`), and what they weigh (not in `bytes`). In a store bounded
    /// in bytes, the kept values of all its caches weigh at most a quarter
    /// of its bound.
    pub kept: u64,
    /// See `kept`.
    pub kept_bytes: u64,
}

impl CacheStats {
    /// Hits over all lookups, between 0 and 1 (0 when there were none).
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// A snapshot of the whole cache's statistics; see [`stats`](crate::stats).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Entries held, over all caches.
    pub entries: u64,
    /// Links between a dependency and an entry in the registry.
    pub dependency_links: usize,
    /// Distinct dependencies that some entry depends on.
    pub dependencies: usize,
    /// One row per cache that has been used.
    pub caches: Vec<CacheStats>,
}

impl Stats {
    /// The row of the cache (or `#[cached]` function) named `name`.
    pub fn cache(&self, name: &str) -> Option<&CacheStats> {
        self.caches.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_across_threads() {
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 4000);
    }
}
