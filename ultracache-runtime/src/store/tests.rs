//! The store's bound, its clock and its tombstones, with entries of its own.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use super::Store;
use crate::config::StoreConfig;
use crate::dep::Dep;
use crate::entry::{next_id, Cause, Entry};
use crate::mark::Mark;
use crate::state::State;

struct Probe {
    id: u64,
    weight: u32,
    state: State,
    mark: Mark,
    store: Arc<Store>,
    killed: AtomicUsize,
}

impl Entry for Probe {
    fn id(&self) -> u64 {
        self.id
    }
    fn deps(&self) -> &[Dep] {
        &[]
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn kill(&self, cause: Cause) {
        self.killed.fetch_add(1, SeqCst);
        self.state.end(cause);
        self.store.release(self);
    }
    fn state(&self) -> &State {
        &self.state
    }
    fn mark(&self) -> &Mark {
        &self.mark
    }
    fn basis(&self) -> u64 {
        0
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A probe not yet in `store`.
fn outside(store: &Arc<Store>, weight: u32) -> Arc<Probe> {
    Arc::new(Probe {
        id: next_id(),
        weight,
        state: State::pending(),
        mark: Mark::new(),
        store: Arc::clone(store),
        killed: AtomicUsize::new(0),
    })
}

/// A probe inserted in `store`.
fn probe(store: &Arc<Store>, weight: u32) -> Arc<Probe> {
    let p = outside(store, weight);
    store.insert(Arc::clone(&p) as Arc<dyn Entry>);
    p
}

fn entries(n: u64) -> Arc<Store> {
    let config = StoreConfig {
        max_entries: Some(n),
        max_bytes: None,
        default_timeout: None,
    };
    Arc::new(Store::new("t", &config))
}

#[test]
fn a_small_store_evicts_in_order_and_spares_what_was_read() {
    let store = entries(4);
    assert_eq!(store.shards.len(), 1);
    let first: Vec<_> = (0..4).map(|_| probe(&store, 1)).collect();
    first[0].mark.see();
    let fifth = probe(&store, 1);
    // The first was read: the clock spares it and takes the second.
    assert_eq!(first[0].killed.load(SeqCst), 0);
    assert_eq!(first[1].killed.load(SeqCst), 1);
    assert_eq!(store.weight(), 4);
    let _sixth = probe(&store, 1);
    assert_eq!(first[2].killed.load(SeqCst), 1);
    assert_eq!(fifth.killed.load(SeqCst), 0);
}

#[test]
fn a_released_entry_frees_its_room_and_is_never_evicted() {
    let store = entries(3);
    let a = probe(&store, 1);
    let b = probe(&store, 1);
    let c = probe(&store, 1);
    store.release(&*b);
    store.release(&*b);
    assert_eq!(store.weight(), 2);
    let _d = probe(&store, 1);
    assert_eq!(store.weight(), 3);
    assert!([&a, &b, &c].iter().all(|p| p.killed.load(SeqCst) == 0));
    let _e = probe(&store, 1);
    // `b`'s tombstone no longer counts: `a`, the oldest, makes room.
    assert_eq!(a.killed.load(SeqCst), 1);
    assert_eq!(c.killed.load(SeqCst), 0);
    assert_eq!(b.killed.load(SeqCst), 0);
    assert_eq!(store.weight(), 3);
}

#[test]
fn a_store_in_bytes_counts_weights_with_a_floor() {
    let store = Arc::new(Store::new(
        "b",
        &StoreConfig::new().max_entries(10).max_bytes(1_000),
    ));
    let small = probe(&store, 1);
    assert_eq!(store.weight(), 100);
    let big = probe(&store, 950);
    assert_eq!(small.killed.load(SeqCst), 1);
    assert_eq!(store.weight(), 950);
    // Heavier than the whole store: it evicts itself, and nothing else.
    let huge = probe(&store, 5_000);
    assert_eq!(huge.killed.load(SeqCst), 1);
    assert_eq!(big.killed.load(SeqCst), 0);
    assert_eq!(store.weight(), 950);
    // Released before it came, it is counted once, and not kept.
    let late = outside(&store, 5_000);
    store.release(&*late);
    store.insert(Arc::clone(&late) as Arc<dyn Entry>);
    assert_eq!(late.killed.load(SeqCst), 0);
    assert_eq!(store.weight(), 950);
    assert_eq!(Arc::strong_count(&late), 1);
}

#[test]
fn released_before_inserted_counts_once() {
    let store = entries(2);
    let p = outside(&store, 1);
    store.release(&*p);
    store.insert(Arc::clone(&p) as Arc<dyn Entry>);
    assert_eq!(store.weight(), 0);
    store.sweep();
    assert_eq!(Arc::strong_count(&p), 1, "the tombstone is dropped");
}

#[test]
fn tombstones_are_swept_and_their_memory_returns() {
    let store = entries(100_000);
    let all: Vec<_> = (0..10_000).map(|_| probe(&store, 1)).collect();
    for p in &all {
        store.release(&**p);
    }
    assert_eq!(store.weight(), 0);
    assert!(all.iter().all(|p| Arc::strong_count(p) == 2));
    store.sweep();
    assert!(all.iter().all(|p| Arc::strong_count(p) == 1));
}

#[test]
fn inserting_sweeps_tombstones_when_they_are_half_the_queue() {
    let store = entries(1_000_000);
    let all: Vec<_> = (0..1_000).map(|_| probe(&store, 1)).collect();
    for p in &all {
        store.release(&**p);
    }
    // Ids are shared with the tests running beside this one: insert until
    // every shard had one (a bounded number of times).
    let mut inserted = 0;
    while all.iter().any(|p| Arc::strong_count(p) > 1) {
        assert!(inserted < 100_000, "tombstones were never swept");
        probe(&store, 1);
        inserted += 1;
    }
    assert_eq!(store.weight(), inserted);
}

#[test]
fn clear_ends_every_entry_once_and_empties_the_store() {
    let store = entries(1_000);
    let all: Vec<_> = (0..500).map(|_| probe(&store, 1)).collect();
    store.release(&*all[7]);
    store.clear();
    assert_eq!(store.weight(), 0);
    for (i, p) in all.iter().enumerate() {
        assert_eq!(p.killed.load(SeqCst), usize::from(i != 7));
        assert_eq!(Arc::strong_count(p), 1);
    }
}

#[test]
fn concurrent_inserts_and_releases_keep_the_bound_and_the_count() {
    let store = entries(256);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..20_000u32 {
                    let p = probe(&store, 1);
                    if (i + t) % 3 == 0 {
                        p.mark.see();
                    }
                    if i % 2 == 0 {
                        store.release(&*p);
                    }
                    mine.push(p);
                    assert!(store.weight() <= 256 + 4);
                    // Tombstones included: what the store holds.
                    assert!(store.held() <= 256 + 4);
                }
                mine
            })
        })
        .collect();
    let all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(store.weight() <= 256);
    // Every entry left the count exactly once or is still in it.
    let live = all.iter().filter(|p| !p.mark.left()).count() as i64;
    assert_eq!(store.weight(), live);
    assert!(all.iter().all(|p| p.killed.load(SeqCst) <= 1));
}

#[test]
fn a_new_entry_is_never_its_own_victim_when_all_others_were_read() {
    let store = entries(4);
    let first: Vec<_> = (0..4).map(|_| probe(&store, 1)).collect();
    for p in &first {
        p.mark.see();
    }
    let fifth = probe(&store, 1);
    assert_eq!(fifth.killed.load(SeqCst), 0);
    // Every other had a second chance; the clock came round to the first.
    assert_eq!(first[0].killed.load(SeqCst), 1);
    assert_eq!(
        first.iter().map(|p| p.killed.load(SeqCst)).sum::<usize>(),
        1
    );
    assert_eq!(store.weight(), 4);
}

#[test]
fn tombstones_count_against_the_bound_and_are_swept_for_room() {
    let store = entries(10);
    let all: Vec<_> = (0..10).map(|_| probe(&store, 1)).collect();
    // Too few to be swept for their number, but they hold room.
    for p in &all[..4] {
        store.release(&**p);
    }
    assert_eq!((store.weight(), store.held()), (6, 10));
    let more: Vec<_> = (0..4).map(|_| probe(&store, 1)).collect();
    assert!(
        all[..4].iter().all(|p| Arc::strong_count(p) == 1),
        "the tombstones were dropped for room"
    );
    assert!(all.iter().chain(&more).all(|p| p.killed.load(SeqCst) == 0));
    assert_eq!((store.weight(), store.held()), (10, 10));
}

#[test]
fn a_few_tombstones_make_room_as_the_clock_reaches_them() {
    let store = entries(100);
    let all: Vec<_> = (0..100).map(|_| probe(&store, 1)).collect();
    for p in &all[50..55] {
        store.release(&**p);
    }
    // Under an eighth of the bound: not swept; the clock evicts the
    // oldest instead, and the store never holds more than its bound.
    for _ in 0..60 {
        probe(&store, 1);
        assert!(store.held() <= 100, "{} held", store.held());
    }
    assert!(all[50..55].iter().all(|p| Arc::strong_count(p) == 1));
    assert!(all[50..55].iter().all(|p| p.killed.load(SeqCst) == 0));
    assert_eq!(store.held(), 100);
}

#[test]
fn kept_values_hold_their_room_within_a_byte_bound() {
    // One shard of 1,000 bytes; 300 of them held by kept values.
    let store = Arc::new(Store::new(
        "t",
        &StoreConfig::new().max_entries(10).max_bytes(1_000),
    ));
    store.kept.store(300, SeqCst);
    let all: Vec<_> = (0..10).map(|_| probe(&store, 100)).collect();
    assert_eq!(store.held(), 700, "the entries fit in the rest");
    assert_eq!(all.iter().filter(|p| p.killed.load(SeqCst) == 1).count(), 3);
    // Once the kept values are let go, the room is the entries' again.
    store.kept.store(0, SeqCst);
    let more: Vec<_> = (0..3).map(|_| probe(&store, 100)).collect();
    assert_eq!(store.held(), 1_000);
    assert!(more.iter().all(|p| p.killed.load(SeqCst) == 0));
    // Kept values past a whole shard leave room for one entry.
    store.kept.store(5_000, SeqCst);
    let last = probe(&store, 100);
    assert_eq!(store.held(), 100);
    assert_eq!(last.killed.load(SeqCst), 0);
}
