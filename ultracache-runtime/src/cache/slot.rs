//! Slots: one stored value of a cache, with what it was computed from and
//! where it is in its life (see [`protocol`](crate::protocol)).

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Weak;

use super::core::Core;
use super::outcome::{CacheKey, CacheValue};
use crate::clock::{self, Nanos, NEVER};
use crate::dep::Dep;
use crate::entry::{Cause, Entry};
use crate::registry::registry;
use crate::state::State;

pub(super) struct Slot<K, V> {
    pub(super) id: u64,
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

impl<K, V> Slot<K, V> {
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
    /// Ends its life for `cause`: out of its cache, its store (unless the
    /// store let go of it already) and the registry.
    pub(super) fn end(&self, cause: Cause, remove_from_store: bool) {
        // The first end decides how it ended: the store's listener, hearing
        // of the removal this end makes, must not turn a replaced entry into
        // an invalidated one (a hit on it would then be refused needlessly).
        if self.ended.swap(true, SeqCst) {
            return;
        }
        self.state.end(cause);
        if let Some(core) = self.owner.upgrade() {
            core.unlink(&self.key, self.id);
            if remove_from_store {
                core.store.remove(self.id);
            }
            if cause == Cause::Expired {
                if let Some(grace) = &core.grace {
                    grace.keep(self);
                }
            }
            core.ended(cause, &self.key, &self.value);
        }
        registry().unregister(self.id, &self.deps);
    }
}

impl<K: CacheKey, V: CacheValue> Entry for Slot<K, V> {
    fn id(&self) -> u64 {
        self.id
    }
    fn deps(&self) -> &[Dep] {
        &self.deps
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn kill(&self, cause: Cause) {
        // Evictions and expiries come from the store's listener: the store has
        // let go of the entry already.
        self.end(cause, !matches!(cause, Cause::Evicted | Cause::Expired));
    }
    fn state(&self) -> &State {
        &self.state
    }
    fn basis(&self) -> u64 {
        self.basis
    }
}
