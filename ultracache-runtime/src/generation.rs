//! Generations: the guard against stale write-back.
//!
//! A global tick counts invalidations. Each invalidation stamps the tick into a
//! fixed table of slots indexed by the dependency's hash (and, for a whole-kind
//! invalidation, the kind's wildcard slot). A computation snapshots the tick
//! before it starts; at insert, any of its dependencies stamped after the
//! snapshot means it may have read data that was written while it ran, and it
//! is not stored. Slot collisions only cause a conservative skip, never a stale
//! entry, and the table's size is fixed: memory stays bounded.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use crate::dep::{mix, Dep, Kind};

const SLOTS: usize = 1 << 16;
const WILDCARD_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

static TICK: AtomicU64 = AtomicU64::new(1);
static CLEARED: AtomicU64 = AtomicU64::new(0);
static STAMPS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

fn slot(hash: u64) -> &'static AtomicU64 {
    &STAMPS[(hash as usize) & (SLOTS - 1)]
}

fn wildcard_slot(kind: Kind) -> &'static AtomicU64 {
    slot(mix(kind.hash64() ^ WILDCARD_SALT))
}

/// The snapshot a computation takes before it starts.
pub(crate) fn snapshot() -> u64 {
    TICK.load(SeqCst)
}

/// The moment a computation started, for [`Cache::insert_computed`]: a value
/// computed since then is not stored if something it read was invalidated in
/// the meantime.
///
/// [`Cache::insert_computed`]: crate::Cache::insert_computed
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot(pub(crate) u64);

impl Snapshot {
    /// Now: take it before reading anything the value is computed from.
    pub fn now() -> Self {
        Snapshot(snapshot())
    }
}

fn next_tick() -> u64 {
    TICK.fetch_add(1, SeqCst) + 1
}

/// Stamps `deps` as invalidated now. Call before removing their entries.
pub(crate) fn stamp(deps: &[Dep]) {
    let t = next_tick();
    for dep in deps {
        slot(dep.hash64()).fetch_max(t, SeqCst);
    }
}

/// Stamps every dependency of `kind` as invalidated now.
pub(crate) fn stamp_kind(kind: Kind) {
    let t = next_tick();
    wildcard_slot(kind).fetch_max(t, SeqCst);
}

/// Stamps everything as invalidated now (`clear`).
pub(crate) fn stamp_all() {
    let t = next_tick();
    CLEARED.fetch_max(t, SeqCst);
}

/// Whether any of `deps` (or everything) was invalidated after `start`.
pub(crate) fn stale(deps: &[Dep], start: u64) -> bool {
    if CLEARED.load(SeqCst) > start {
        return true;
    }
    deps.iter().any(|dep| {
        slot(dep.hash64()).load(SeqCst) > start
            || wildcard_slot(dep.model_kind()).load(SeqCst) > start
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_after_the_snapshot_is_stale() {
        let kind = Kind::new("generation.test");
        let dep = Dep::object(kind, &1u32);
        let other = Dep::object(kind, &2u32);
        let start = snapshot();
        assert!(!stale(&[dep, other], start));
        stamp(&[dep]);
        assert!(stale(&[dep], start));
        assert!(!stale(&[other], start) || std::ptr::eq(slot(other.hash64()), slot(dep.hash64())));
        assert!(!stale(&[dep], snapshot()));
    }

    #[test]
    fn a_kind_stamp_covers_its_objects() {
        let kind = Kind::new("generation.kind");
        let start = snapshot();
        stamp_kind(kind);
        assert!(stale(&[Dep::object(kind, &9u32)], start));
        assert!(stale(&[Dep::kind(kind)], start));
    }
}
