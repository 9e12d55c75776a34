//! The publish protocol: when a computed value may be stored, and how an
//! invalidation orders its steps, so that **once an invalidation returns, no
//! read returns a value computed from the data it replaced** — however
//! computations, hits, invalidations and single flight interleave.
//!
//! # What a computation records
//!
//! A computation records, in its frame ([`Reads`]):
//!
//! - its *fresh reads*: each dependency it read from the source of truth,
//!   valid against the frame's **basis**, the tick of
//!   [`Versions`](crate::versions) when the frame opened (lowered when it
//!   takes in reads from a computation that started earlier);
//! - its *hits*: each entry whose value it used (a cache hit, or the value a
//!   flight it waited for stored). A hit's value is as fresh as that entry.
//!
//! # Publishing (a computed value becomes visible)
//!
//! 1. [`stage`]: the entry is registered under every dependency (its fresh
//!    reads and its hits' dependencies) and inserted into its store, in state
//!    *pending*: not in its cache's front map, so never served.
//! 2. Then it is checked, and made *live* only if every check passes:
//!    - ([`fresh`]) no fresh read's dependency (nor its kind as a whole, nor
//!      everything) has a version above the basis; every hit entry is still
//!      *live*; a hit entry that was *retired* (evicted, expired, replaced)
//!      instead passes the version check against its own basis; a *doomed*
//!      one (invalidated) fails;
//!    - ([`reveal`], under the cache's publish lock, which
//!      `Cache::invalidate(key)` and `invalidate_all` also take to version)
//!      neither its cache, nor its store, nor its key was cleared or
//!      invalidated after the basis, and it was not doomed meanwhile. Only
//!      then does it enter the front map, replacing the entry there was.
//!
//! # Invalidating
//!
//! 1. The dependencies get a new version (a new tick).
//! 2. The entries registered under them are taken out of the registry and
//!    marked *doomed* while the registry shard's lock is held; then they are
//!    removed from their stores and caches.
//!
//! # Holding (a commit seen before it is visible)
//!
//! A database commit becomes visible to other connections before the
//! writer's connection can invalidate what it changed. So the writer holds
//! the dependencies first (a hold makes `fresh` fail for any basis), drops
//! the entries, lets the commit become visible, invalidates again, and only
//! then releases the hold. A reader that sees the new rows finds no entry of
//! the old rows live: those entries were dropped before, and anything
//! computed meanwhile — from the old rows or the new — failed its check
//! while the hold stood, or started after the second invalidation.
//!
//! # Why it holds
//!
//! Every step above is sequentially consistent. A publisher registers before
//! it checks; an invalidation versions before it takes. (Key and cache
//! invalidations version under the publish lock and then look in the front
//! map, where a revealed entry already is; store clears version and then
//! look in the store, where a staged entry already is.) So either the check
//! sees the new version, or the take finds the entry (and kills it, even
//! live). For a hit: if the invalidation took the hit entry before the
//! publisher registered under the same dependency, the shard lock orders the
//! doom before the publisher's check, which then fails; if after, the take
//! finds the publisher too. A retired hit entry is no longer registered, so
//! its own basis stands in for it. A hit on a value computed before a write
//! can therefore never outlive the invalidation of that write, which is the
//! race the old "snapshot + stamp table" scheme had (a hit taken while an
//! invalidation was running passed its check).
//!
//! Freshness reads the versions exactly for the most recent invalidations
//! (see [`versions`](crate::versions)): an invalidation of something a
//! computation did not read never refuses it.
//!
//! The interleavings of these steps are explored by the model checker
//! (`cargo test -p ultracache-runtime --features loom --lib model_check`).

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use crate::dep::{Dep, Kind};
use crate::entry::{invalidate_all, Entry, Taken};
use crate::recorder::Reads;
use crate::registry::Registry;
use crate::state::{LIVE, PENDING, RETIRED};
use crate::sync::AtomicU64;
use crate::versions::Versions;

/// What else may have invalidated a computation in flight, besides its
/// reads: its cache or its store being cleared, its own key invalidated.
#[derive(Default)]
pub(crate) struct Guards<'a> {
    /// Ticks of `invalidate_all` / `clear_store` for the entry's cache and store.
    pub(crate) cleared: [Option<&'a AtomicU64>; 2],
    /// The version key of the entry's key in its cache.
    pub(crate) key: Option<u64>,
}

/// Whether what `reads` read is still fresh: step 2's checks of the reads.
/// Call it after the entry is registered and inserted in its store.
pub(crate) fn fresh(versions: &Versions, reads: &Reads) -> bool {
    for hit in &reads.hits {
        let ok = match hit.state().load() {
            LIVE => true,
            RETIRED => !versions.changed(hit.deps(), hit.basis()),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    !versions.changed(&reads.deps, reads.basis)
}

/// Step 1 and the checks of the reads: registers `entry`, lets `stage` put
/// it in its store, and tells whether its reads are still fresh. When they
/// are, the caller [`reveal`]s it; when not, it ends it as stale.
pub(crate) fn stage(
    versions: &Versions,
    registry: &Registry,
    entry: &Arc<dyn Entry>,
    reads: &Reads,
    stage: impl FnOnce(),
) -> bool {
    registry.register(entry);
    if entry.state().load() != PENDING {
        // Taken by an invalidation (or a clear) while its links were being
        // made: its end unlinked what was linked by then, and the links made
        // after would outlive it — holding it, value and all, until their
        // dependencies are written again. Its registration is complete now:
        // unlinked again, nothing is left.
        registry.unregister(entry.id(), entry.deps());
    }
    stage();
    fresh(versions, reads)
}

/// The rest of step 2: makes a staged entry live unless its cache, store or
/// key was invalidated after `basis` (or it was doomed meanwhile). The
/// caller holds the lock its key and cache invalidations take to version,
/// and puts the entry in its cache before releasing it.
pub(crate) fn reveal(
    versions: &Versions,
    entry: &dyn Entry,
    basis: u64,
    guards: &Guards<'_>,
) -> bool {
    let cleared = guards
        .cleared
        .iter()
        .flatten()
        .any(|c| c.load(SeqCst) > basis);
    let key = guards.key.is_some_and(|k| versions.version(k) > basis);
    !cleared && !key && entry.state().activate()
}

/// Invalidates `deps` (each as given) and whole `kinds`: new versions first,
/// then every registered dependent is doomed and killed. Returns how many
/// entries it dropped, and the tick of its last new version (a write that
/// must not outlive a later invalidation publishes against it); `each` hears
/// of every dependency and kind with the number of entries it dropped.
pub(crate) fn invalidate(
    versions: &Versions,
    registry: &Registry,
    deps: &[Dep],
    kinds: &[Kind],
    mut each: impl FnMut(Target<'_>, usize),
) -> (usize, u64) {
    let mut n = 0;
    let mut tick = 0;
    let mut panic = None;
    if !deps.is_empty() {
        tick = versions.stamp(deps);
        for dep in deps {
            let entries = registry.take(dep);
            each(Target::Dep(dep), entries.len());
            n += entries.len();
            invalidate_all(&entries, Taken::Dep(dep), &mut panic);
        }
    }
    for kind in kinds {
        tick = versions.stamp_kind(*kind);
        let entries = registry.take_kind(*kind);
        each(Target::Kind(*kind), entries.len());
        n += entries.len();
        invalidate_all(&entries, Taken::Kind(*kind), &mut panic);
    }
    // An `on_invalidated` hook panicked: every entry is dropped already,
    // and the panic goes on to the writer.
    if let Some(panic) = panic {
        std::panic::resume_unwind(panic);
    }
    (n, tick)
}

/// What one step of an invalidation was about.
pub(crate) enum Target<'a> {
    Dep(&'a Dep),
    Kind(Kind),
}

#[cfg(all(test, feature = "loom"))]
mod model_check;
