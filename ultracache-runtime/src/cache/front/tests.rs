use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Weak};

use super::*;
use crate::clock::NEVER;
use crate::mark::Mark;
use crate::state::State;

/// A value that counts its copies alive: the token's strong count.
type Value = (u64, Arc<()>);

fn slot(key: u64, version: u64, token: &Arc<()>) -> Arc<Slot<u64, Value>> {
    slot_of(key, (key * 1_000 + version, Arc::clone(token)))
}

/// A slot of `key` holding `value`, pending, with no dependency.
fn slot_of<K>(key: K, value: Value) -> Arc<Slot<K, Value>> {
    Arc::new(Slot {
        key,
        value,
        deps: Box::<[crate::dep::Dep]>::from([]).into(),
        basis: 0,
        deadline: NEVER,
        weight: 0,
        state: State::pending(),
        ended: AtomicBool::new(false),
        mark: Mark::new(),
        owner: Weak::new(),
    })
}

fn front() -> Front<u64, Value> {
    Front::new(Hasher::default())
}

fn value(front: &Front<u64, Value>, key: u64) -> Option<u64> {
    let guard = front.guard();
    front.get(&key, &guard).map(|s| s.value.0)
}

fn words(front: &Front<u64, Value>) -> usize {
    let guard = front.guard();
    front
        .tables
        .iter()
        .map(|t| {
            let t = guard.protect(t, Acquire);
            unsafe { t.as_ref() }.map_or(0, |t| t.words.len())
        })
        .sum()
}

/// Checks each shard's counts against its table: live slots, tombstones,
/// at most three quarters not null.
fn check_counts(front: &Front<u64, Value>) {
    let guard = front.guard();
    for (s, table) in front.tables.iter().enumerate() {
        let counts = front.lock(s);
        let t = guard.protect(table, Acquire);
        let Some(t) = (unsafe { t.as_ref() }) else {
            assert_eq!((counts.live, counts.tombs), (0, 0));
            continue;
        };
        let words: Vec<_> = t.words.iter().map(|w| w.load(Acquire)).collect();
        let tombs = words.iter().filter(|w| w.addr() == TOMB).count();
        let live = words
            .iter()
            .filter(|w| !w.is_null() && w.addr() != TOMB)
            .count();
        assert_eq!((counts.live, counts.tombs), (live, tombs), "shard {s}");
        assert!((live + tombs) * 4 <= words.len() * 3, "shard {s} too full");
    }
}

#[test]
fn finds_replaces_and_removes_by_key_and_id() {
    let token = Arc::new(());
    let f = front();
    assert_eq!(value(&f, 1), None);
    let first = slot(1, 0, &token);
    assert!(f.insert(Arc::clone(&first)).is_none());
    assert!(f.insert(slot(2, 0, &token)).is_none());
    assert_eq!(value(&f, 1), Some(1_000));
    let second = slot(1, 1, &token);
    let old = f.insert(Arc::clone(&second)).expect("replaced");
    assert!(Arc::ptr_eq(&old, &first));
    assert_eq!(value(&f, 1), Some(1_001));
    // Not the first slot any more: left.
    assert!(!f.remove(&1, first.id()));
    assert_eq!(value(&f, 1), Some(1_001));
    assert!(f.remove(&1, second.id()));
    assert!(!f.remove(&1, second.id()));
    assert_eq!(value(&f, 1), None);
    assert_eq!(value(&f, 2), Some(2_000));
    assert_eq!(f.slots().len(), 1);
    check_counts(&f);
    drop((old, first, second, f));
    assert_eq!(Arc::strong_count(&token), 1, "every slot let go once");
}

#[test]
fn grows_shrinks_and_lets_every_slot_go() {
    let token = Arc::new(());
    let f = front();
    let slots: Vec<_> = (0..20_000).map(|k| slot(k, 0, &token)).collect();
    for s in &slots {
        f.insert(Arc::clone(s));
    }
    for k in 0..20_000 {
        assert_eq!(value(&f, k), Some(k * 1_000), "key {k}");
    }
    let grown = words(&f);
    // Between half and three quarters full (a shard's first table aside).
    assert!(
        (20_000 * 4 / 3..=20_000 * 2 + 64 * 8).contains(&grown),
        "{grown}"
    );
    for (k, s) in (0..19_990).zip(&slots) {
        assert!(f.remove(&k, s.id()));
    }
    drop(slots);
    for k in 0..20_000 {
        assert_eq!(value(&f, k), (k >= 19_990).then_some(k * 1_000), "key {k}");
    }
    assert!(words(&f) * 16 < grown, "shrunk: {} of {grown}", words(&f));
    // Tombstones do not pile up: insert and remove a new key many times.
    for k in 100_000..300_000 {
        let s = slot(k, 0, &token);
        f.insert(Arc::clone(&s));
        assert!(f.remove(&k, s.id()));
    }
    assert_eq!(value(&f, 1), None);
    assert_eq!(f.slots().len(), 10);
    check_counts(&f);
    drop(f);
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn readers_see_whole_slots_of_their_key_while_writers_churn() {
    const KEYS: u64 = 256;
    const ROUNDS: u64 = 20_000;
    let token = Arc::new(());
    let f = Arc::new(front());
    let start = Arc::new(Barrier::new(4));
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (f, token, start) = (Arc::clone(&f), Arc::clone(&token), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for r in 0..ROUNDS {
                    let key = (r * 7 + w * 131) % KEYS;
                    // Held while its id is used: no other slot takes its
                    // address meanwhile (as every caller in the cache does).
                    let s = slot(key, r % 1_000, &token);
                    f.insert(Arc::clone(&s));
                    if r % 3 == 0 {
                        f.remove(&key, s.id());
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|_| {
            let (f, start, done) = (Arc::clone(&f), Arc::clone(&start), Arc::clone(&done));
            std::thread::spawn(move || {
                start.wait();
                let mut found = 0u64;
                let mut k = 0;
                while !done.load(SeqCst) {
                    k = (k + 1) % (KEYS + 16);
                    let guard = f.guard();
                    if let Some(s) = f.get(&k, &guard) {
                        assert_eq!(s.key, k);
                        assert_eq!(s.value.0 / 1_000, k, "another key's value");
                        let kept = s.arc();
                        drop(guard);
                        assert_eq!(kept.value.0 / 1_000, k);
                        found += 1;
                    }
                }
                found
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, SeqCst);
    let found: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(found > 0);
    let live = f.slots().len();
    assert!(live as u64 <= KEYS);
    check_counts(&f);
    drop(f);
    assert_eq!(Arc::strong_count(&token), 1, "every slot let go once");
}

#[test]
#[should_panic(expected = "a guard of another front map")]
fn a_guard_of_another_map_is_refused() {
    let (a, b) = (front(), front());
    let guard = b.guard();
    let _ = a.get(&1, &guard);
}

/// A key (0) whose hash panics once asked to: only a rebuild hashes it
/// again, and that rebuild leaves the table it was rebuilding from, with
/// nothing lost or freed twice.
#[test]
fn a_hash_that_panics_mid_rebuild_loses_nothing() {
    use std::sync::atomic::AtomicBool;
    static PANIC: AtomicBool = AtomicBool::new(false);
    #[derive(PartialEq, Eq)]
    struct Touchy(u64);
    impl Hash for Touchy {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            assert!(!(self.0 == 0 && PANIC.load(SeqCst)), "hash refused");
            state.write_u64(self.0);
        }
    }
    let token = Arc::new(());
    let f: Front<Touchy, Value> = Front::new(Hasher::default());
    let slot = |k: u64| slot_of(Touchy(k), (k, Arc::clone(&token)));
    for k in 0..100 {
        f.insert(slot(k));
    }
    // The next insert that grows a table panics in the middle of it.
    let mut k = 100;
    let caught = loop {
        let next = slot(k);
        PANIC.store(true, SeqCst);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.insert(next)));
        PANIC.store(false, SeqCst);
        if result.is_err() {
            break k;
        }
        k += 1;
        assert!(k < 10_000, "no rebuild");
    };
    // The slot that was being inserted is not there; the rest is.
    assert_eq!(f.get(&Touchy(caught), &f.guard()).map(|s| s.value.0), None);
    // Everything inserted before is still there, found and counted.
    let guard = f.guard();
    for k in 0..100 {
        assert_eq!(
            f.get(&Touchy(k), &guard).map(|s| s.value.0),
            Some(k),
            "key {k}"
        );
    }
    drop(guard);
    let mut n = 0;
    f.for_each(&f.guard(), |_| n += 1);
    assert_eq!(n, caught as usize);
    drop(f);
    assert_eq!(Arc::strong_count(&token), 1, "every slot let go once");
}
