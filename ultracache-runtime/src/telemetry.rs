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

#[inline]
pub(crate) fn hits(cache: &'static str, n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!("ultracache_hits_total", "cache" => cache).increment(n);
    #[cfg(not(feature = "metrics"))]
    let _ = (cache, n);
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

pub(crate) fn dropped(cache: &'static str, cause: Cause) {
    let cause = match cause {
        Cause::Invalidated | Cause::Cleared => "invalidated",
        Cause::Evicted => "evicted",
        Cause::Expired => "expired",
        Cause::Replaced | Cause::Stale => return,
    };
    tracing::trace!(target: "ultracache", cache, cause, "entry dropped");
    #[cfg(feature = "metrics")]
    metrics::counter!("ultracache_dropped_total", "cache" => cache, "cause" => cause).increment(1);
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
