//! Versions: the tick at which each dependency was last invalidated.
//!
//! A global tick counts invalidations. Invalidating a dependency takes the
//! next tick and records it against the dependency's 64-bit hash. A
//! computation's reads are fresh as long as none of the dependencies they
//! were recorded under has a version above the tick the computation started
//! at (its *basis*; see [`protocol`](crate::protocol)).
//!
//! Versions are exact for the most recent invalidations: up to
//! `shards × per_shard` of them (65,536 by default), so an unrelated write
//! never refuses a computation. Older versions are folded, oldest first,
//! into a fixed table of slots indexed by hash (the lossy fallback): a slot
//! holds the newest version folded into it, so a lookup can only answer too
//! new, never too old. A computation is then refused only if it started
//! before a folded invalidation that shares a slot with one of its reads
//! (with 65,536 slots and 65,536 exact versions at 10,000 writes per second,
//! that needs a computation running for more than 6 seconds). Memory stays
//! fixed.
//!
//! A dependency can also be **held** (a [`Hold`]): while it is, every
//! computation that read it counts as changed, whatever its basis. A commit
//! seen before it becomes visible to other connections (SQLite's commit
//! hook) holds what it changes until it is applied after (its WAL hook): a
//! computation that reads the rows in between — old or new, it cannot tell
//! — is served to its caller but never stored.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::LazyLock;

use crate::dep::{mix, Dep, Kind};
use crate::sync::{lock, raise_u64, AtomicU64, Mutex};

type Hasher = foldhash::fast::FixedState;

const WILDCARD_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Default)]
struct Shard {
    versions: HashMap<u64, u64, Hasher>,
    /// `(hash, version)` in the order they were recorded: the oldest go to
    /// the fallback first.
    order: VecDeque<(u64, u64)>,
}

/// The versions of every dependency (one per process; tests and the model
/// checker make their own).
pub(crate) struct Versions {
    tick: AtomicU64,
    /// The tick of the last `clear()`: everything is invalidated at once.
    cleared: AtomicU64,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    folded: Box<[AtomicU64]>,
    /// How many holds are on (a publish looks at `held` only then).
    holding: AtomicU64,
    /// Held version keys, with how many holds hold each.
    held: Mutex<HashMap<u64, u32, Hasher>>,
}

/// Dependencies held until [`Versions::release`]: see the module docs.
#[derive(Debug)]
pub(crate) struct Hold {
    keys: Vec<u64>,
    released: std::sync::atomic::AtomicBool,
}

static VERSIONS: LazyLock<Versions> = LazyLock::new(|| Versions::new(64, 1024, 1 << 16));

/// The process's versions.
pub(crate) fn versions() -> &'static Versions {
    &VERSIONS
}

/// The version key of "any object of `kind`" (a whole-kind invalidation).
pub(crate) fn wildcard(kind: Kind) -> u64 {
    mix(kind.hash64() ^ WILDCARD_SALT)
}

impl Versions {
    /// `shards` and `folded` must be powers of two.
    pub(crate) fn new(shards: usize, per_shard: usize, folded: usize) -> Self {
        debug_assert!(shards.is_power_of_two() && folded.is_power_of_two());
        Versions {
            tick: AtomicU64::new(1),
            cleared: AtomicU64::new(0),
            // The order of each shard holds at most `per_shard + 1` pairs:
            // allocated once, so that the versions' memory does not creep up
            // as each shard fills (1 MiB for the process's versions).
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        versions: HashMap::default(),
                        order: VecDeque::with_capacity(per_shard.max(1) + 1),
                    })
                })
                .collect(),
            per_shard: per_shard.max(1),
            folded: (0..folded).map(|_| AtomicU64::new(0)).collect(),
            holding: AtomicU64::new(0),
            held: Mutex::new(HashMap::default()),
        }
    }

    /// The current tick: a computation that starts now has this basis.
    pub(crate) fn now(&self) -> u64 {
        self.tick.load(SeqCst)
    }

    /// Takes the next tick (an invalidation's version).
    pub(crate) fn next(&self) -> u64 {
        self.tick.fetch_add(1, SeqCst) + 1
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[(key >> 7) as usize & (self.shards.len() - 1)]
    }

    fn folded(&self, key: u64) -> &AtomicU64 {
        &self.folded[key as usize & (self.folded.len() - 1)]
    }

    /// Records `version` against `key` (keeping the newest). Each shard
    /// keeps its `per_shard` most recently recorded keys exact: a key
    /// recorded again keeps its one place in the order and goes to the back
    /// when it reaches the front, so writing a few keys over and over never
    /// pushes another key's recent version out.
    pub(crate) fn record(&self, key: u64, version: u64) {
        let mut guard = lock(self.shard(key));
        let shard = &mut *guard;
        match shard.versions.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let v = e.get_mut();
                *v = (*v).max(version);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(version);
                shard.order.push_back((key, version));
            }
        }
        while shard.order.len() > self.per_shard {
            let Some((old, at)) = shard.order.pop_front() else {
                break;
            };
            match shard.versions.get(&old).copied() {
                // Recorded again since it was queued: still recent.
                Some(latest) if latest > at => shard.order.push_back((old, latest)),
                Some(_) => {
                    // Folded before it leaves the exact map: a reader
                    // holding the lock after this sees one or the other.
                    raise_u64(self.folded(old), at);
                    shard.versions.remove(&old);
                }
                None => {}
            }
        }
    }

    /// Invalidates `deps` (each exactly as given) at a new tick.
    pub(crate) fn stamp(&self, deps: &[Dep]) -> u64 {
        let t = self.next();
        for dep in deps {
            self.record(dep.hash64(), t);
        }
        t
    }

    /// Invalidates every dependency of `kind` at a new tick.
    pub(crate) fn stamp_kind(&self, kind: Kind) -> u64 {
        let t = self.next();
        self.record(wildcard(kind), t);
        t
    }

    /// Invalidates everything at a new tick (`clear`).
    pub(crate) fn stamp_all(&self) -> u64 {
        let t = self.next();
        raise_u64(&self.cleared, t);
        t
    }

    /// The version of `key`: the tick of its last invalidation (or a later
    /// one, for a key folded into the fallback), 0 if none is known.
    pub(crate) fn version(&self, key: u64) -> u64 {
        let exact = lock(self.shard(key)).versions.get(&key).copied();
        exact.unwrap_or(0).max(self.folded(key).load(SeqCst))
    }

    /// Holds `deps` (each as given) and whole `kinds` until the hold is
    /// released: meanwhile every computation that read one of them counts
    /// as changed. Hold first, then drop the entries, as an invalidation
    /// versions first (see [`protocol`](crate::protocol)).
    pub(crate) fn hold(&self, deps: &[Dep], kinds: &[Kind]) -> Hold {
        let keys: Vec<u64> = deps
            .iter()
            .map(Dep::hash64)
            .chain(kinds.iter().map(|k| wildcard(*k)))
            .collect();
        self.holding.fetch_add(1, SeqCst);
        let mut held = lock(&self.held);
        for key in &keys {
            *held.entry(*key).or_insert(0) += 1;
        }
        Hold {
            keys,
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ends `hold` (once; later calls do nothing). Release a hold only once
    /// what it held was invalidated after the change became visible, so
    /// that a computation that read the old data before is refused by its
    /// version.
    pub(crate) fn release(&self, hold: &Hold) {
        if hold.released.swap(true, SeqCst) {
            return;
        }
        {
            let mut held = lock(&self.held);
            for key in &hold.keys {
                if let Some(n) = held.get_mut(key) {
                    *n -= 1;
                    if *n == 0 {
                        held.remove(key);
                    }
                }
            }
        }
        self.holding.fetch_sub(1, SeqCst);
    }

    /// Whether one of `deps`, or its kind as a whole, is held.
    pub(crate) fn held(&self, deps: &[Dep]) -> bool {
        if self.holding.load(SeqCst) == 0 {
            return false;
        }
        let held = lock(&self.held);
        deps.iter().any(|dep| {
            held.contains_key(&dep.hash64()) || held.contains_key(&wildcard(dep.model_kind()))
        })
    }

    /// Whether anything that `deps` name was invalidated after `basis` (the
    /// dependency itself, its kind as a whole, or everything), or is held.
    pub(crate) fn changed(&self, deps: &[Dep], basis: u64) -> bool {
        if self.held(deps) {
            return true;
        }
        if self.now() <= basis {
            // No invalidation at all since `basis`.
            return false;
        }
        if self.cleared.load(SeqCst) > basis {
            return true;
        }
        let mut last_kind = None;
        for dep in deps {
            let kind = dep.model_kind();
            // Deps are sorted by kind: each kind's wildcard is looked up once.
            if last_kind != Some(kind) {
                if self.version(wildcard(kind)) > basis {
                    return true;
                }
                last_kind = Some(kind);
            }
            if self.version(dep.hash64()) > basis {
                return true;
            }
        }
        false
    }

    /// How many exact versions are held (for tests and statistics).
    #[cfg(all(test, not(feature = "loom")))]
    pub(crate) fn exact(&self) -> usize {
        self.shards.iter().map(|s| lock(s).versions.len()).sum()
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;

    const KIND: Kind = Kind::new("versions.test");

    #[test]
    fn a_stamp_after_the_basis_is_a_change_and_one_before_is_not() {
        let v = Versions::new(4, 16, 64);
        let dep = Dep::object(KIND, &1u32);
        let basis = v.now();
        assert!(!v.changed(&[dep], basis));
        v.stamp(&[dep]);
        assert!(v.changed(&[dep], basis));
        assert!(!v.changed(&[dep], v.now()));
    }

    #[test]
    fn an_unrelated_stamp_never_refuses_while_versions_are_exact() {
        let v = Versions::new(4, 1024, 4);
        let read: Vec<Dep> = (0..1000u32).map(|i| Dep::object(KIND, &i)).collect();
        let basis = v.now();
        for i in 1000..1200u32 {
            v.stamp(&[Dep::object(KIND, &i)]);
        }
        assert!(!v.changed(&read, basis));
    }

    #[test]
    fn a_kind_stamp_covers_its_objects_and_clear_covers_all() {
        let v = Versions::new(4, 16, 64);
        let basis = v.now();
        v.stamp_kind(KIND);
        assert!(v.changed(&[Dep::object(KIND, &9u32)], basis));
        assert!(v.changed(&[Dep::kind(KIND)], basis));
        let basis = v.now();
        v.stamp_all();
        assert!(v.changed(&[Dep::object(Kind::new("other"), &1u32)], basis));
    }

    #[test]
    fn a_held_dependency_is_changed_for_any_basis_until_released() {
        let v = Versions::new(4, 16, 64);
        let (dep, other) = (Dep::object(KIND, &1u32), Dep::object(KIND, &2u32));
        let a = v.hold(&[dep], &[]);
        let b = v.hold(&[dep], &[]);
        assert!(v.changed(&[dep], v.now()), "a computation that starts now");
        assert!(!v.changed(&[other], v.now()), "another object is not held");
        v.release(&a);
        v.release(&a);
        assert!(v.changed(&[dep], v.now()), "the second hold stands");
        v.release(&b);
        assert!(!v.changed(&[dep], v.now()));
        let kind = v.hold(&[], &[KIND]);
        assert!(
            v.changed(&[other], v.now()),
            "a kind hold covers its objects"
        );
        v.release(&kind);
        assert!(!v.changed(&[other], v.now()));
    }

    #[test]
    fn the_ring_of_recent_versions_is_allocated_once_and_never_grows() {
        let v = Versions::new(4, 64, 64);
        let capacity = |v: &Versions| -> Vec<usize> {
            v.shards.iter().map(|s| lock(s).order.capacity()).collect()
        };
        let before = capacity(&v);
        assert!(before.iter().all(|&c| c > 64), "{before:?}");
        for i in 0..100_000u32 {
            v.stamp(&[Dep::object(KIND, &(i % 5_000))]);
        }
        assert_eq!(capacity(&v), before, "a shard's ring grew");
        assert!(v.exact() <= 4 * 65);
    }

    #[test]
    fn writing_a_few_keys_over_and_over_folds_no_other_key() {
        let v = Versions::new(1, 8, 64);
        let quiet = Dep::object(KIND, &1_000u32);
        let basis = v.now();
        v.stamp(&[quiet]);
        let later = v.now();
        for i in 0..100_000u32 {
            v.stamp(&[Dep::object(KIND, &(i % 4))]);
        }
        assert!(
            v.folded.iter().all(|f| f.load(SeqCst) == 0),
            "a version was folded"
        );
        assert_eq!(v.exact(), 5);
        assert!(v.changed(&[quiet], basis));
        // Another object: no version of its own, and none folded over it.
        for other in 0..1_000u32 {
            assert!(!v.changed(&[Dep::object(KIND, &(2_000 + other))], later));
        }
    }

    #[test]
    fn folded_versions_are_never_too_old() {
        let v = Versions::new(1, 2, 1);
        let dep = Dep::object(KIND, &1u32);
        let basis = v.now();
        v.stamp(&[dep]);
        for i in 2..10u32 {
            v.stamp(&[Dep::object(KIND, &i)]);
        }
        assert!(v.exact() <= 2);
        assert!(v.changed(&[dep], basis), "a folded version still counts");
    }
}
