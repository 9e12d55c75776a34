//! One shard of a store: a queue of entries in the order they came, walked
//! by a clock hand when the shard is over its bound, and its counts.

use std::collections::VecDeque;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::entry::{Cause, Entry};

/// A queue holding more slots than twice this many entries is shrunk when
/// swept.
const SLACK: usize = 2;

/// The queue is swept when at least this many of its places are
/// tombstones and they are half of it.
const SWEEP_AT: i64 = 32;

/// Tombstones holding at least this share of a shard's bound
/// (`bound / SWEEP_SHARE`) are swept when the shard needs their room;
/// fewer make room as the clock reaches them, like evicted entries.
const SWEEP_SHARE: i64 = 8;

/// What an entry counts against a store's bound.
#[derive(Clone, Copy)]
pub(super) struct Weigh(
    /// In a store bounded in bytes, the least an entry weighs; `None` in
    /// one bounded in entries (each weighs 1).
    pub(super) Option<u32>,
);

impl Weigh {
    pub(super) fn of(self, entry: &dyn Entry) -> i64 {
        match self.0 {
            None => 1,
            Some(floor) => i64::from(entry.weight().max(floor)),
        }
    }
}

type Queue = VecDeque<Arc<dyn Entry>>;

#[repr(align(64))]
pub(super) struct Shard {
    queue: Mutex<Queue>,
    /// The weight of the entries in the queue that have not left.
    live: AtomicI64,
    /// Places in the queue whose entry has left, and their weight (both may
    /// dip below zero while an entry released before it was inserted is
    /// being inserted).
    dead: AtomicI64,
    dead_weight: AtomicI64,
    capacity: i64,
}

/// What a store operation took out, to end and drop once no lock is held:
/// ending runs the user's hooks, and dropping may run their `Drop`s.
#[derive(Default)]
pub(super) struct Swept {
    evicted: Vec<Arc<dyn Entry>>,
    gone: Vec<Arc<dyn Entry>>,
}

impl Swept {
    /// Buries the tombstones and drops them, then ends the evicted entries
    /// (every one, even if a hook panics; the first panic goes on after).
    pub(super) fn finish(self) {
        let Swept { evicted, gone } = self;
        for entry in gone {
            entry.bury();
        }
        crate::entry::each_then_unwind(evicted, |entry| entry.kill(Cause::Evicted));
    }
}

impl Shard {
    pub(super) fn new(capacity: u64) -> Self {
        Shard {
            queue: Mutex::new(VecDeque::new()),
            live: AtomicI64::new(0),
            dead: AtomicI64::new(0),
            dead_weight: AtomicI64::new(0),
            capacity: i64::try_from(capacity).unwrap_or(i64::MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the shard's queue holds: the entries that have not left, and
    /// the tombstones of those that did (their memory is not free until
    /// the queue drops them).
    pub(super) fn held(&self) -> i64 {
        self.live.load(SeqCst) + self.dead_weight.load(SeqCst)
    }

    /// Counts an entry released elsewhere out (its place is a tombstone).
    pub(super) fn left(&self, weight: i64) {
        self.live.fetch_sub(weight, SeqCst);
        self.dead.fetch_add(1, SeqCst);
        self.dead_weight.fetch_add(weight, SeqCst);
    }

    /// A tombstone leaves the queue.
    fn buried(&self, entry: Arc<dyn Entry>, weigh: Weigh, swept: &mut Swept) {
        self.dead.fetch_sub(1, SeqCst);
        self.dead_weight.fetch_sub(weigh.of(&*entry), SeqCst);
        swept.gone.push(entry);
    }

    /// Walks the clock until `entry` fits within the shard's bound, which
    /// its tombstones count against too — a tombstone is dropped, an entry
    /// read since the last pass goes round again, any other is evicted —
    /// then appends it (behind the hand: the last the clock reaches). An
    /// entry heavier than the whole shard is evicted at once, evicting
    /// nothing else. `reserved` of the bound is held elsewhere (values kept
    /// past their timeout): the shard's entries fit in the rest.
    pub(super) fn insert(&self, entry: Arc<dyn Entry>, weigh: Weigh, reserved: i64) -> Swept {
        let mut swept = Swept::default();
        let weight = weigh.of(&*entry);
        if weight > self.capacity {
            if entry.mark().leave() {
                swept.evicted.push(entry);
            } else {
                // Released before it got here: counted out already.
                self.live.fetch_add(weight, SeqCst);
                self.buried(entry, weigh, &mut swept);
            }
            return swept;
        }
        let room = self.capacity - reserved.clamp(0, self.capacity - weight);
        let mut queue = self.lock();
        let dead = self.dead.load(SeqCst);
        let dead_weight = self.dead_weight.load(SeqCst);
        // Many tombstones, or tombstones holding room the bound needs.
        if dead >= SWEEP_AT && dead as usize * 2 >= queue.len()
            || dead > 0 && dead_weight * SWEEP_SHARE >= self.capacity && self.held() + weight > room
        {
            self.sweep_locked(&mut queue, weigh, &mut swept);
        }
        // Each pass clears what it spares: two passes at most evict, however
        // often readers mark entries meanwhile.
        let mut spares = queue.len();
        while self.held() + weight > room {
            let Some(old) = queue.pop_front() else {
                break;
            };
            let mark = old.mark();
            if mark.left() {
                self.buried(old, weigh, &mut swept);
            } else if spares > 0 && mark.take_seen() {
                spares -= 1;
                queue.push_back(old);
            } else if mark.leave() {
                self.live.fetch_sub(weigh.of(&*old), SeqCst);
                swept.evicted.push(old);
            } else {
                // Released between the two looks.
                self.buried(old, weigh, &mut swept);
            }
        }
        // (Released before it got here, it goes in as a tombstone.)
        self.live.fetch_add(weight, SeqCst);
        queue.push_back(entry);
        swept
    }

    fn sweep_locked(&self, queue: &mut Queue, weigh: Weigh, swept: &mut Swept) {
        queue.retain(|entry| {
            if entry.mark().left() {
                // The last handle is dropped once the lock is released.
                self.buried(Arc::clone(entry), weigh, swept);
                false
            } else {
                true
            }
        });
        if queue.capacity() > SLACK * queue.len().max(16) {
            queue.shrink_to(SLACK * queue.len());
        }
    }

    /// Drops every tombstone.
    pub(super) fn sweep(&self, weigh: Weigh, swept: &mut Swept) {
        if self.dead.load(SeqCst) != 0 {
            self.sweep_locked(&mut self.lock(), weigh, swept);
        }
    }

    /// Empties the shard: the entries that had not left go to `ending`.
    pub(super) fn take_all(
        &self,
        weigh: Weigh,
        ending: &mut Vec<Arc<dyn Entry>>,
        swept: &mut Swept,
    ) {
        let all = std::mem::take(&mut *self.lock());
        for entry in all {
            if entry.mark().leave() {
                self.live.fetch_sub(weigh.of(&*entry), SeqCst);
                ending.push(entry);
            } else {
                self.buried(entry, weigh, swept);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn weight(&self) -> i64 {
        self.live.load(SeqCst)
    }
}
