//! The life of a stored entry: pending (staged, not served) → live →
//! retired (evicted, expired, replaced, refused) or doomed (invalidated).
//! See [`protocol`](crate::protocol) for who moves it when.

use std::sync::atomic::Ordering::SeqCst;

use crate::sync::AtomicU8;

pub(crate) const PENDING: u8 = 0;
pub(crate) const LIVE: u8 = 1;
pub(crate) const RETIRED: u8 = 2;
pub(crate) const DOOMED: u8 = 3;

/// Where an entry is in its life: pending → live → retired or doomed.
pub(crate) struct State(AtomicU8);

impl State {
    pub(crate) fn pending() -> Self {
        State(AtomicU8::new(PENDING))
    }

    /// Pending → live; false if it was doomed or retired meanwhile.
    pub(crate) fn activate(&self) -> bool {
        self.0
            .compare_exchange(PENDING, LIVE, SeqCst, SeqCst)
            .is_ok()
    }

    /// Invalidated: a hit on it must not be published.
    pub(crate) fn doom(&self) {
        crate::sync::raise_u8(&self.0, DOOMED);
    }

    /// Gone for another reason (evicted, expired, replaced, refused).
    pub(crate) fn retire(&self) {
        crate::sync::raise_u8(&self.0, RETIRED);
    }

    /// Leaves it as `cause` says: doomed for an invalidation, else retired.
    pub(crate) fn end(&self, cause: Cause) {
        match cause {
            Cause::Invalidated | Cause::Cleared => self.doom(),
            _ => self.retire(),
        }
    }

    /// Where it is now: [`PENDING`], [`LIVE`], [`RETIRED`] or [`DOOMED`].
    pub(crate) fn load(&self) -> u8 {
        self.0.load(SeqCst)
    }

    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.0.load(SeqCst) == LIVE
    }
}

/// Why an entry left the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// One of its dependencies was written.
    Invalidated,
    /// The store ran out of room.
    Evicted,
    /// Its timeout passed.
    Expired,
    /// A newer value for the same key replaced it.
    Replaced,
    /// A dependency was written while it was being computed.
    Stale,
    /// `clear()`.
    Cleared,
}
