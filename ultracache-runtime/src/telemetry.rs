//! What the cache tells the outside: `tracing` events (target `ultracache`)
//! for misses, stores, invalidations (with the dependency that caused them)
//! and evictions, and — with the `metrics` feature — counters through the
//! `metrics` facade, so a Prometheus exporter gets them without code:
//!
//! | counter | labels |
//! |---|---|
//! | `ultracache_hits_total` | `cache` (reported in batches of 256 per thread) |
//! | `ultracache_misses_total` | `cache` |
//! | `ultracache_inserts_total` | `cache` |
//! | `ultracache_dropped_total` | `cache`, `cause` (`invalidated`, `evicted`, `expired`) |

use crate::dep::Dep;
use crate::entry::Cause;

/// Hits are counted in batches this large per thread.
pub(crate) const HIT_BATCH: u64 = 256;

/// One cache's hit counter: its metric key is made once, so that reporting
/// a batch of hits allocates nothing.
pub(crate) struct HitCounter {
    #[cfg(feature = "metrics")]
    key: metrics::Key,
}

#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl HitCounter {
    pub(crate) fn new(cache: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        return HitCounter {
            key: metrics::Key::from_parts(
                "ultracache_hits_total",
                vec![metrics::Label::from_static_parts("cache", cache)],
            ),
        };
        #[cfg(not(feature = "metrics"))]
        {
            let _ = cache;
            HitCounter {}
        }
    }

    /// Reports `n` hits.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        #[cfg(feature = "metrics")]
        metrics::with_recorder(|r| r.register_counter(&self.key, &METADATA).increment(n));
        #[cfg(not(feature = "metrics"))]
        let _ = n;
    }
}

pub(crate) fn miss(cache: &'static str) {
    tracing::trace!(target: "ultracache", cache, "miss: computing");
    #[cfg(feature = "metrics")]
    metrics::counter!("ultracache_misses_total", "cache" => cache).increment(1);
}

pub(crate) fn insert(cache: &'static str, deps: usize) {
    tracing::trace!(target: "ultracache", cache, dependencies = deps, "stored");
    #[cfg(feature = "metrics")]
    metrics::counter!("ultracache_inserts_total", "cache" => cache).increment(1);
}

/// Reports `n` entries of `cache` dropped for `cause`.
pub(crate) fn dropped(cache: &'static str, cause: Cause, n: u64) {
    let cause = match cause {
        Cause::Invalidated | Cause::Cleared => "invalidated",
        Cause::Evicted => "evicted",
        Cause::Expired => "expired",
        Cause::Replaced | Cause::Stale => return,
    };
    tracing::trace!(target: "ultracache", cache, cause, entries = n, "entries dropped");
    #[cfg(feature = "metrics")]
    {
        // Inside an invalidation: counted, and reported once at its end
        // (building a metric's key costs more than dropping the entry).
        let batched = DROPS.with(|drops| match drops.borrow_mut().as_mut() {
            Some(drops) => {
                match drops
                    .iter_mut()
                    .find(|(c, k, _)| std::ptr::eq(*c, cache) && *k == cause)
                {
                    Some((_, _, count)) => *count += n,
                    None => drops.push((cache, cause, n)),
                }
                true
            }
            None => false,
        });
        if !batched {
            metrics::counter!("ultracache_dropped_total", "cache" => cache, "cause" => cause)
                .increment(n);
        }
    }
}

/// Drops counted by cache and cause, during one invalidation.
#[cfg(feature = "metrics")]
type Drops = Option<Vec<(&'static str, &'static str, u64)>>;

#[cfg(feature = "metrics")]
thread_local! {
    /// Drops counted during the invalidation under way on this thread.
    static DROPS: std::cell::RefCell<Drops> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (an invalidation), reporting the drops it makes per cache and
/// cause at its end.
pub(crate) fn drops_batched<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "metrics")]
    {
        /// Reports the batch and restores the enclosing one, however `f`
        /// ends (a panicking `on_invalidated` hook included).
        struct Flush(Drops);
        impl Drop for Flush {
            fn drop(&mut self) {
                let outer = self.0.take();
                let drops = DROPS.with(|d| std::mem::replace(&mut *d.borrow_mut(), outer));
                for (cache, cause, n) in drops.unwrap_or_default() {
                    metrics::counter!("ultracache_dropped_total", "cache" => cache, "cause" => cause)
                        .increment(n);
                }
            }
        }
        let _flush = Flush(DROPS.with(|d| d.borrow_mut().replace(Vec::new())));
        f()
    }
    #[cfg(not(feature = "metrics"))]
    f()
}

/// Why entries were dropped: the dependency that was written.
pub(crate) fn invalidated(dep: &Dep, entries: usize) {
    if entries > 0 {
        tracing::debug!(target: "ultracache", dependency = %dep, entries, "invalidated");
    }
}

/// A whole kind was written.
pub(crate) fn invalidated_kind(kind: &str, entries: usize) {
    if entries > 0 {
        tracing::debug!(target: "ultracache", kind, entries, "invalidated every object of a kind");
    }
}

/// A value not stored because a dependency was written while it was computed.
pub(crate) fn stale(cache: &'static str) {
    tracing::debug!(target: "ultracache", cache, "not stored: a dependency was written while it was computed");
}
