//! What a store keeps on each entry it holds: one byte in the entry (below
//! both [`entry`](crate::entry) and [`store`](crate::store)).

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use crate::sync::AtomicU8;

/// Read since the store's clock last passed it.
const SEEN: u8 = 1;
/// Out of the store's count: evicted, or ended elsewhere and released.
const LEFT: u8 = 2;
/// Ended, but still in its cache's map (never served: not live) until the
/// store drops its tombstone, a read finds it, or maintenance runs.
const LINGER: u8 = 4;

/// An entry's place in its store's policy: whether it was read lately,
/// whether it has left the store's count (exactly once), and whether it
/// lingers in its cache's map after it ended.
pub(crate) struct Mark(AtomicU8);

impl Mark {
    pub(crate) fn new() -> Self {
        Mark(AtomicU8::new(0))
    }

    /// A read: the entry gets a second chance when the clock next passes
    /// it. Writes only the first read after each pass.
    #[inline]
    pub(crate) fn see(&self) {
        if self.0.load(Relaxed) & SEEN == 0 {
            self.0.fetch_or(SEEN, Relaxed);
        }
    }

    /// Whether it was read since the last pass; the next pass asks anew.
    pub(crate) fn take_seen(&self) -> bool {
        self.0.load(Relaxed) & SEEN != 0 && self.0.fetch_and(!SEEN, Relaxed) & SEEN != 0
    }

    /// Leaves the store's count: true for the first caller only.
    pub(crate) fn leave(&self) -> bool {
        self.0.fetch_or(LEFT, AcqRel) & LEFT == 0
    }

    /// Whether it left the store's count already (a tombstone).
    pub(crate) fn left(&self) -> bool {
        self.0.load(Acquire) & LEFT != 0
    }

    /// Ended but left in its cache's map, to be taken out later.
    pub(crate) fn linger(&self) {
        self.0.fetch_or(LINGER, AcqRel);
    }

    /// Whether it lingered: true for the first caller only, who takes it out.
    pub(crate) fn take_linger(&self) -> bool {
        self.0.load(Acquire) & LINGER != 0 && self.0.fetch_and(!LINGER, AcqRel) & LINGER != 0
    }
}
