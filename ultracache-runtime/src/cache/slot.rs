//! Slots: one stored value of a cache, with what it was computed from and
//! where it is in its life (see [`protocol`](crate::protocol)).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Weak};

use super::core::Core;
use super::outcome::{CacheKey, CacheValue};
use crate::clock::{self, Nanos, NEVER};
use crate::dep::Dep;
use crate::entry::{Cause, Entry, Panic, Taken};
use crate::mark::Mark;
use crate::registry::registry;
use crate::state::State;

pub(super) struct Slot<K, V> {
    pub(super) key: K,
    pub(super) value: V,
    pub(super) deps: Deps,
    /// The oldest tick its reads are valid against.
    pub(super) basis: u64,
    /// For the hit path, on the coarse clock.
    pub(super) deadline: Nanos,
    pub(super) weight: u32,
    pub(super) state: State,
    /// Set by the first `end`: what follows runs once.
    pub(super) ended: AtomicBool,
    /// Its place in its store's policy.
    pub(super) mark: Mark,
    pub(super) owner: Weak<Core<K, V>>,
}

/// An entry's dependencies: most entries have one, kept inline.
pub(super) enum Deps {
    One(Dep),
    Many(Box<[Dep]>),
}

impl Deps {
    pub(super) fn as_slice(&self) -> &[Dep] {
        match self {
            Deps::One(dep) => std::slice::from_ref(dep),
            Deps::Many(deps) => deps,
        }
    }
}

impl From<Box<[Dep]>> for Deps {
    fn from(deps: Box<[Dep]>) -> Self {
        match *deps {
            [one] => Deps::One(one),
            _ => Deps::Many(deps),
        }
    }
}

impl std::ops::Deref for Deps {
    type Target = [Dep];
    fn deref(&self) -> &[Dep] {
        self.as_slice()
    }
}

/// What a slot of `deps` dependencies takes in memory beyond its key's
/// and value's heap, as a store bounded in bytes counts it: with small
/// values this bookkeeping is most of an entry's memory, and a bound that
/// left it out would be passed many times over.
///
/// - The slot's allocation, with the `Arc`'s two counts and the
///   allocator's header, rounded to the allocator's 16-byte steps.
/// - Its word in its cache's map and its place in its store's queue (a
///   fat pointer): tables kept between a quarter and three quarters full,
///   and queues that double, counted at twice their element.
/// - Its dependencies' list, when it has more than the one kept inline.
/// - Per dependency, its link in the registry ([`LINK`]).
pub(super) const fn footprint<K, V>(deps: usize) -> usize {
    const WORD: usize = size_of::<usize>();
    let slot = (size_of::<Slot<K, V>>() + 3 * WORD).next_multiple_of(16);
    let places = 2 * WORD + 2 * (2 * WORD);
    let list = if deps > 1 {
        (deps * size_of::<Dep>() + WORD).next_multiple_of(16)
    } else {
        0
    };
    slot + places + list + deps * LINK
}

/// What a link in the registry takes: a bucket of an id, a fat pointer
/// and a control byte (25 bytes) in hash tables that sit about a third
/// full while links come and go (std's tables rehash in place rather than
/// grow only when at most half full); two entries sharing a dependency
/// take about as much each in their short list.
const LINK: usize = 80;

impl<K, V> Slot<K, V> {
    /// Its number: its address, which no other slot has while this one is
    /// held (the registry, the store and the front map hold what they
    /// name), without a word of its own.
    #[inline]
    pub(super) fn id(&self) -> u64 {
        (self as *const Self).addr() as u64
    }

    /// Whether a read may return it: live and not past its deadline.
    #[inline]
    pub(super) fn live(&self) -> bool {
        self.state.is_live() && (self.deadline == NEVER || clock::now() < self.deadline)
    }

    /// Live but past its deadline.
    pub(super) fn expired(&self, now: Nanos) -> bool {
        self.state.is_live() && self.deadline != NEVER && now >= self.deadline
    }
}

impl<K: CacheKey, V: CacheValue> Slot<K, V> {
    /// Ends its life for `cause`: out of its cache, its store's count
    /// (unless the store let go of it already) and the registry.
    pub(super) fn end(&self, cause: Cause) {
        // The first end decides how it ended: an eviction or a sweep racing
        // a replacement must not turn a replaced entry into an invalidated
        // one (a hit on it would then be refused needlessly).
        if self.ended.swap(true, SeqCst) {
            return;
        }
        self.state.end(cause);
        let core = self.owner.upgrade();
        if let Some(core) = &core {
            core.unlink(&self.key, self.id());
            core.store.release(self);
            if cause == Cause::Expired {
                if let Some(grace) = &core.grace {
                    grace.keep(self);
                }
            }
        }
        registry().unregister(self.id(), self.deps.iter());
        // Last: it runs the user's `on_invalidated` hook, which may panic.
        if let Some(core) = &core {
            core.ended(cause, &self.key, &self.value);
        }
    }
}

impl<K: CacheKey, V: CacheValue> Entry for Slot<K, V> {
    fn id(&self) -> u64 {
        Slot::id(self)
    }
    fn deps(&self) -> &[Dep] {
        &self.deps
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn kill(&self, cause: Cause) {
        self.end(cause);
    }
    fn state(&self) -> &State {
        &self.state
    }
    fn mark(&self) -> &Mark {
        &self.mark
    }
    fn bury(&self) {
        if let Some(core) = self.owner.upgrade() {
            core.unlink_slot(self);
        }
    }
    fn basis(&self) -> u64 {
        self.basis
    }
    fn owner(&self) -> usize {
        self.owner.as_ptr() as *const () as usize
    }
    fn invalidate_batch(&self, batch: &[Arc<dyn Entry>], taken: Taken<'_>) -> Option<Panic> {
        /// Counts what the batch ended.
        struct Tally<'a, K: CacheKey, V: CacheValue>(Option<&'a Core<K, V>>, u64);
        impl<K: CacheKey, V: CacheValue> Drop for Tally<'_, K, V> {
            fn drop(&mut self) {
                if let Some(core) = self.0 {
                    core.ended_many(Cause::Invalidated, self.1);
                }
            }
        }
        let core = self.owner.upgrade();
        let mut ended = Tally(core.as_deref(), 0);
        let mut panic = None;
        for entry in batch {
            let Some(slot) = entry.as_any().downcast_ref::<Slot<K, V>>() else {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| entry.kill(Cause::Invalidated))) {
                    panic.get_or_insert(p);
                }
                continue;
            };
            // As `end` does, entry by entry (the owner and the counters
            // once for the batch), but not out of the front map.
            if slot.ended.swap(true, SeqCst) {
                continue;
            }
            slot.state.end(Cause::Invalidated);
            if let Some(core) = &core {
                // Left in the front map (never served: not live) until the
                // store drops its tombstone; marked before the store can.
                slot.mark.linger();
                core.store.release(slot);
            }
            // Its links under what was taken are gone already.
            if slot.deps.iter().any(|d| !taken.covers(d)) {
                registry().unregister(slot.id(), slot.deps.iter().filter(|d| !taken.covers(d)));
            }
            ended.1 += 1;
            if let Some(hook) = core.as_ref().and_then(|core| core.on_invalidated) {
                // A panicking hook does not stop the invalidation: the rest
                // of the batch ends, and the first panic goes on after it.
                let call = AssertUnwindSafe(|| hook(&slot.key, &slot.value));
                if let Err(p) = catch_unwind(call) {
                    panic.get_or_insert(p);
                }
            }
        }
        panic
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot of small keys and values, with its `Arc` counts, fits a
    /// 96-byte allocation: a one-dependency slot holds its dependency
    /// inline, in the three words of a `Dep`, and has no id of its own.
    #[test]
    fn a_small_slot_fits_its_allocation() {
        assert_eq!(size_of::<Deps>(), size_of::<Dep>());
        assert!(size_of::<Slot<u64, u64>>() + 2 * size_of::<usize>() <= 88);
    }

    /// A store bounded in bytes counts the bookkeeping of a small entry,
    /// which outweighs its key and value many times.
    #[test]
    fn a_small_slot_weighs_its_bookkeeping() {
        assert_eq!(footprint::<u64, u64>(1), 96 + 48 + 80);
        assert_eq!(footprint::<u64, u64>(10), 96 + 48 + 256 + 800);
    }
}
