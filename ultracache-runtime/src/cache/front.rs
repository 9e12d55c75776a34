//! The front map: a cache's slots by key, read without a lock.
//!
//! Sharded by the key's hash, each shard an open-addressed table (linear
//! probing) of pointers to the slots themselves: no node per entry, the key
//! is the slot's. A reader protects its loads with an epoch guard (seize);
//! writers take their shard's lock, one at a time. A slot taken out, and a
//! table replaced by a larger or smaller one, is retired through the
//! collector and let go when no reader that could have seen it remains.
//!
//! A word of a table is null (empty: a probe stops there), [`TOMB`] (a slot
//! was taken out: a probe goes on), or a slot's address with low bits of its
//! key's hash in the bits the slot's alignment leaves free, so that a probe
//! meeting another key rarely reads that key's slot. Each word holds one
//! strong count of its slot. At most three quarters of a table's words are
//! not null, so every probe ends.

use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use equivalent::Equivalent;
use seize::{Collector, Guard, LocalGuard};

use super::core::Hasher;
use super::slot::Slot;

/// The smallest table, in words.
const MIN_TABLE: usize = 8;

/// The address of a tombstone word: no slot is there (a slot's address is
/// a multiple of its alignment, at least 4, and never that low).
const TOMB: usize = 1;

pub(super) struct Front<K, V> {
    /// Each shard's table (null until its first insert): read by every
    /// lookup, written only when a table is replaced.
    tables: Box<[AtomicPtr<Table<K, V>>]>,
    /// Each shard's writer lock and what its table holds, apart from the
    /// tables: taking a lock does not take their cache line from readers.
    writers: Box<[Writer]>,
    /// A key's shard is its hash's top bits: the hash shifted right by this.
    shift: u32,
    hasher: Hasher,
    collector: Collector,
    /// Holds slots (for `Send`/`Sync`, and the drop check).
    _slots: PhantomData<Arc<Slot<K, V>>>,
}

/// A shard's writer lock, on its own cache line: writers of two shards do
/// not share one.
#[repr(align(64))]
struct Writer(Mutex<Counts>);

#[derive(Default)]
struct Counts {
    live: usize,
    tombs: usize,
}

struct Table<K, V> {
    words: Box<[AtomicPtr<Slot<K, V>>]>,
}

/// A slot found in the front map, valid while the guard it was found
/// under is held.
pub(super) struct Found<'g, K, V> {
    slot: &'g Slot<K, V>,
}

impl<K, V> std::ops::Deref for Found<'_, K, V> {
    type Target = Slot<K, V>;
    fn deref(&self) -> &Slot<K, V> {
        self.slot
    }
}

impl<K, V> Found<'_, K, V> {
    /// A counted reference to the slot, to keep past the guard.
    pub(super) fn arc(&self) -> Arc<Slot<K, V>> {
        let ptr: *const Slot<K, V> = self.slot;
        // SAFETY: every slot in a table was put there by `Arc::into_raw`,
        // and its word's count is given back only by `release_slot`, which
        // the collector runs after every guard that could have found it
        // (this one's included) is dropped: the count is at least one.
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }
}

/// The word after `i` in a table of `len` words, around its end.
#[inline]
fn next(i: usize, len: usize) -> usize {
    if i + 1 == len {
        0
    } else {
        i + 1
    }
}

/// The reclaimer of a slot's word: gives back the count the word held.
unsafe fn release_slot<K, V>(ptr: *mut Slot<K, V>, _: &Collector) {
    // SAFETY: the caller retires only a pointer from `Arc::into_raw`, once.
    drop(unsafe { Arc::from_raw(ptr) });
}

impl<K, V> Front<K, V> {
    const TAGS: usize = align_of::<Slot<K, V>>() - 1;

    pub(super) fn new(hasher: Hasher) -> Self {
        const { assert!(align_of::<Slot<K, V>>() >= 4) };
        // At least two: a shard is the hash's top bits, and shifting a
        // `u64` right by 64 is not zero.
        let shards = crate::sync::core_shards().max(4);
        Front {
            tables: (0..shards)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            writers: (0..shards)
                .map(|_| Writer(Mutex::new(Counts::default())))
                .collect(),
            shift: 64 - shards.trailing_zeros(),
            hasher,
            collector: Collector::new(),
            _slots: PhantomData,
        }
    }

    /// Enters the map: what is found is valid while the guard is held.
    #[inline]
    pub(super) fn guard(&self) -> LocalGuard<'_> {
        self.collector.enter()
    }

    /// A guard of another map's collector would protect nothing here.
    #[inline]
    fn check(&self, guard: &LocalGuard<'_>) {
        assert!(
            std::ptr::eq(guard.collector(), &self.collector),
            "a guard of another front map"
        );
    }

    /// The shard of a key's hash.
    #[inline]
    fn shard(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    #[inline]
    fn tag(hash: u64) -> usize {
        hash as usize & Self::TAGS
    }

    /// Where a probe for `hash` starts in a table of `len` words: the bits
    /// below the shard's, scaled to `len` (any length, not only powers of
    /// two: a table grows by half, not by double).
    #[inline]
    fn start(&self, hash: u64, len: usize) -> usize {
        (((hash << (64 - self.shift)) as u128 * len as u128) >> 64) as usize
    }

    #[inline]
    fn untag(word: *mut Slot<K, V>) -> *mut Slot<K, V> {
        word.map_addr(|a| a & !Self::TAGS)
    }

    /// Whether `word` holds a slot whose key's hash has `tag`.
    #[inline]
    fn holds(word: *mut Slot<K, V>, tag: usize) -> bool {
        !word.is_null() && word.addr() != TOMB && word.addr() & Self::TAGS == tag
    }

    /// The slot of `key`, live or not.
    #[inline]
    pub(super) fn get<'g, Q>(&self, key: &Q, guard: &'g LocalGuard<'_>) -> Option<Found<'g, K, V>>
    where
        Q: Hash + Equivalent<K> + ?Sized,
        K: 'g,
        V: 'g,
    {
        self.check(guard);
        let hash = self.hasher.hash_one(key);
        let table = guard.protect(&self.tables[self.shard(hash)], Acquire);
        // SAFETY: a table is retired only after it is replaced, and the
        // guard keeps what it loaded from being let go.
        let table = unsafe { table.as_ref() }?;
        let len = table.words.len();
        let tag = Self::tag(hash);
        let mut i = self.start(hash, len);
        loop {
            let word = guard.protect(&table.words[i], Acquire);
            if word.is_null() {
                return None;
            }
            if Self::holds(word, tag) {
                // SAFETY: as for the table; a word's slot is retired only
                // after the word stops pointing to it.
                let slot = unsafe { &*Self::untag(word) };
                if key.equivalent(&slot.key) {
                    return Some(Found { slot });
                }
            }
            i = next(i, len);
        }
    }

    /// Calls `f` with every slot in the map, live or not.
    pub(super) fn for_each<'g>(&self, guard: &'g LocalGuard<'_>, mut f: impl FnMut(Found<'g, K, V>))
    where
        K: 'g,
        V: 'g,
    {
        self.check(guard);
        for table in self.tables.iter() {
            let table = guard.protect(table, Acquire);
            // SAFETY: as in `get`.
            let Some(table) = (unsafe { table.as_ref() }) else {
                continue;
            };
            for word in table.words.iter() {
                let word = guard.protect(word, Acquire);
                if !word.is_null() && word.addr() != TOMB {
                    // SAFETY: as in `get`.
                    f(Found {
                        slot: unsafe { &*Self::untag(word) },
                    });
                }
            }
        }
    }

    /// Every slot in the map, live or not.
    pub(super) fn slots(&self) -> Vec<Arc<Slot<K, V>>> {
        let guard = self.guard();
        let mut out = Vec::new();
        self.for_each(&guard, |found| out.push(found.arc()));
        out
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Counts> {
        self.writers[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the shard's table by one of `words` words holding the same
    /// slots, without tombstones. Under the shard's lock.
    fn rebuild(&self, shard: usize, counts: &mut Counts, words: usize, guard: &LocalGuard<'_>)
    where
        K: Hash,
    {
        let old = self.tables[shard].load(Acquire);
        let new = Table {
            words: (0..words)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        };
        // SAFETY: only the lock's holder replaces the table.
        if let Some(old) = unsafe { old.as_ref() } {
            for word in old.words.iter() {
                let word = word.load(Acquire);
                if word.is_null() || word.addr() == TOMB {
                    continue;
                }
                // SAFETY: the table holds a count of the slot.
                let key = unsafe { &(*Self::untag(word)).key };
                let mut i = self.start(self.hasher.hash_one(key), words);
                while !new.words[i].load(Acquire).is_null() {
                    i = next(i, words);
                }
                // The same word: its tag is its key's.
                new.words[i].store(word, Release);
            }
        }
        self.tables[shard].store(Box::into_raw(Box::new(new)), Release);
        counts.tombs = 0;
        if !old.is_null() {
            // SAFETY: replaced above, so no reader entering from now finds
            // it; its words' counts moved to the new table, and dropping a
            // table drops no slot.
            unsafe { guard.defer_retire(old, seize::reclaim::boxed::<Table<K, V>>) };
            // A table can be large: its batch is let go without waiting
            // for more to retire.
            guard.flush();
        }
    }

    /// The table of the shard, made room in for one more slot.
    fn room(&self, shard: usize, counts: &mut Counts, guard: &LocalGuard<'_>) -> &Table<K, V>
    where
        K: Hash,
    {
        let table = self.tables[shard].load(Acquire);
        // SAFETY: only the lock's holder replaces (and retires) the table.
        let words = unsafe { table.as_ref() }.map_or(0, |t| t.words.len());
        if (counts.live + counts.tombs + 1) * 4 > words * 3 {
            self.rebuild(shard, counts, Self::size_for(counts.live + 1), guard);
        }
        // SAFETY: as above; not null after a rebuild.
        unsafe { &*self.tables[shard].load(Acquire) }
    }

    /// Words for a table of `live` slots: half full. It grows at three
    /// quarters (by half) and shrinks under a quarter.
    fn size_for(live: usize) -> usize {
        (live * 2).max(MIN_TABLE)
    }

    /// Puts `slot` in the map under its key; the slot it replaced, if any.
    pub(super) fn insert(&self, slot: Arc<Slot<K, V>>) -> Option<Arc<Slot<K, V>>>
    where
        K: Hash + Eq,
    {
        let hash = self.hasher.hash_one(&slot.key);
        let shard = self.shard(hash);
        // Declared before the lock: retired slots are let go (and their
        // values dropped) after the lock is released.
        let guard = self.guard();
        let mut counts = self.lock(shard);
        let table = self.room(shard, &mut counts, &guard);
        let len = table.words.len();
        let tag = Self::tag(hash);
        let mut i = self.start(hash, len);
        let mut tomb = None;
        loop {
            let word = table.words[i].load(Acquire);
            if word.is_null() {
                break;
            }
            if word.addr() == TOMB {
                tomb.get_or_insert(i);
            } else if word.addr() & Self::TAGS == tag {
                let old = Self::untag(word);
                // SAFETY: the table holds a count of it.
                if unsafe { &(*old).key } == &slot.key {
                    let new = Arc::into_raw(slot).cast_mut().map_addr(|a| a | tag);
                    table.words[i].store(new, Release);
                    // SAFETY: out of the table above; the word's count is
                    // given back by the collector, a new one goes out.
                    unsafe {
                        Arc::increment_strong_count(old);
                        guard.defer_retire(old, release_slot::<K, V>);
                        return Some(Arc::from_raw(old));
                    }
                }
            }
            i = next(i, len);
        }
        let at = match tomb {
            Some(at) => {
                counts.tombs -= 1;
                at
            }
            None => i,
        };
        let new = Arc::into_raw(slot).cast_mut().map_addr(|a| a | tag);
        table.words[at].store(new, Release);
        counts.live += 1;
        None
    }

    /// Takes the slot of `key` out if it is the one numbered `id`.
    pub(super) fn remove(&self, key: &K, id: u64) -> bool
    where
        K: Hash + Eq,
    {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        let guard = self.guard();
        let mut counts = self.lock(shard);
        let table = self.tables[shard].load(Acquire);
        // SAFETY: only the lock's holder replaces (and retires) the table.
        let Some(table) = (unsafe { table.as_ref() }) else {
            return false;
        };
        let len = table.words.len();
        let tag = Self::tag(hash);
        let mut i = self.start(hash, len);
        loop {
            let word = table.words[i].load(Acquire);
            if word.is_null() {
                return false;
            }
            if Self::holds(word, tag) {
                let slot = Self::untag(word);
                // SAFETY: the table holds a count of it.
                let (k, slot_id) = unsafe { (&(*slot).key, (*slot).id()) };
                if k == key {
                    if slot_id != id {
                        return false;
                    }
                    table.words[i].store(std::ptr::without_provenance_mut(TOMB), Release);
                    // SAFETY: out of the table above.
                    unsafe { guard.defer_retire(slot, release_slot::<K, V>) };
                    counts.live -= 1;
                    counts.tombs += 1;
                    let words = table.words.len();
                    if words > MIN_TABLE && counts.live * 4 < words {
                        let size = Self::size_for(counts.live);
                        self.rebuild(shard, &mut counts, size, &guard);
                    }
                    return true;
                }
            }
            i = next(i, len);
        }
    }
}

impl<K, V> Drop for Front<K, V> {
    fn drop(&mut self) {
        for table in self.tables.iter_mut() {
            let table = *table.get_mut();
            if table.is_null() {
                continue;
            }
            // SAFETY: no reader is left (`&mut self`); the table is the
            // shard's, never retired.
            let table = unsafe { Box::from_raw(table) };
            for word in table.words.iter() {
                let word = word.load(Acquire);
                if !word.is_null() && word.addr() != TOMB {
                    // SAFETY: the word's count, given back once.
                    drop(unsafe { Arc::from_raw(Self::untag(word)) });
                }
            }
        }
        // What was retired is let go by the collector's own drop.
    }
}

#[cfg(test)]
mod tests;
