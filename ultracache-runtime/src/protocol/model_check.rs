//! The protocol's interleavings, explored exhaustively by loom on the real
//! code: [`Versions`], the [`Registry`], [`State`] and the steps of
//! [`stage`], [`reveal`] and [`invalidate`], on loom's atomics and locks.
//!
//! Run: `cargo test -p ultracache-runtime --features loom --release --lib model_check`.
//!
//! Each model has a reader computing a value (from the source of truth, or
//! by hitting a cached entry) and publishing it, against a writer that
//! writes the source of truth and then invalidates; some add a third thread
//! (an eviction, a key invalidation). The property checked in every
//! interleaving: once the invalidation returned — and at the end — no live
//! entry holds a value computed from the data it replaced.

use std::sync::Arc;

use loom::sync::atomic::AtomicU64;
use loom::sync::Mutex;
use loom::thread;

use super::{invalidate, reveal, stage, Guards};
use crate::dep::{Dep, Kind};
use crate::entry::{Cause, Entry};
use crate::mark::Mark;
use crate::recorder::Reads;
use crate::registry::Registry;
use crate::state::State;
use crate::versions::Versions;

const KIND: Kind = Kind::new("model");
/// The value every entry computed before the write holds.
const OLD: u64 = 0;

struct TestEntry {
    id: u64,
    deps: Box<[Dep]>,
    basis: u64,
    value: u64,
    state: State,
    mark: Mark,
}

impl Entry for TestEntry {
    fn id(&self) -> u64 {
        self.id
    }
    fn deps(&self) -> &[Dep] {
        &self.deps
    }
    fn weight(&self) -> u32 {
        1
    }
    fn kill(&self, cause: Cause) {
        self.state.end(cause);
    }
    fn state(&self) -> &State {
        &self.state
    }
    fn mark(&self) -> &Mark {
        &self.mark
    }
    fn basis(&self) -> u64 {
        self.basis
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn dep() -> Dep {
    Dep::object(KIND, &1u32)
}

struct World {
    versions: Versions,
    registry: Registry,
    /// The source of truth: the object's value.
    data: AtomicU64,
    /// The entries revealed so far (a cache's front map).
    front: Mutex<Vec<Arc<TestEntry>>>,
    /// Orders revealing against key invalidations (the cache's publish lock).
    reveal: Mutex<()>,
}

impl World {
    fn new() -> Arc<Self> {
        Arc::new(World {
            versions: Versions::new(1, 2, 2),
            registry: Registry::new(1),
            data: AtomicU64::new(OLD),
            front: Mutex::new(Vec::new()),
            reveal: Mutex::new(()),
        })
    }

    /// Publishes a value computed from `reads`, with `id`.
    fn publish(&self, id: u64, value: u64, reads: &Reads, key: Option<u64>) -> bool {
        let entry = Arc::new(TestEntry {
            id,
            deps: reads.all_deps(),
            basis: reads.oldest_basis(),
            value,
            state: State::pending(),
            mark: Mark::new(),
        });
        let dyn_entry: Arc<dyn Entry> = Arc::clone(&entry) as Arc<dyn Entry>;
        if !stage(&self.versions, &self.registry, &dyn_entry, reads, || {}) {
            entry.state.retire();
            self.registry.unregister(entry.id, &entry.deps);
            return false;
        }
        let _reveal = self.reveal.lock().unwrap();
        let guards = Guards {
            cleared: [None, None],
            key,
        };
        if reveal(&self.versions, &*entry, reads.basis, &guards) {
            self.front.lock().unwrap().push(entry);
            true
        } else {
            entry.state.retire();
            self.registry.unregister(entry.id, &entry.deps);
            false
        }
    }

    /// The writer: writes the object, then invalidates it.
    fn write(&self) {
        self.data
            .store(OLD + 1, std::sync::atomic::Ordering::SeqCst);
        let _ = invalidate(&self.versions, &self.registry, &[dep()], &[], |_, _| {});
    }

    /// No live entry holds the old value.
    fn assert_fresh(&self, when: &str) {
        let front: Vec<_> = self.front.lock().unwrap().clone();
        let stale: Vec<u64> = front
            .iter()
            .filter(|e| e.state.is_live() && e.value == OLD)
            .map(|e| e.id)
            .collect();
        assert!(
            stale.is_empty(),
            "{when}: entries {stale:?} are live with a value computed from replaced data"
        );
    }

    /// An entry computed from the old data, live before anything runs.
    fn cached_old(&self) -> Arc<TestEntry> {
        let reads = Reads {
            deps: vec![dep()],
            hits: Vec::new(),
            basis: self.versions.now(),
        };
        assert!(self.publish(1, OLD, &reads, None));
        Arc::clone(&self.front.lock().unwrap()[0])
    }
}

/// The reader: hits `cached` if it is live, else reads the source of truth;
/// then publishes the value it got.
fn read(world: &World, cached: &Arc<TestEntry>) {
    let mut reads = Reads {
        deps: Vec::new(),
        hits: Vec::new(),
        basis: world.versions.now(),
    };
    let value = if cached.state.is_live() {
        reads.hit(Arc::clone(cached) as Arc<dyn Entry>);
        cached.value
    } else {
        let v = world.data.load(std::sync::atomic::Ordering::SeqCst);
        reads.deps.push(dep());
        v
    };
    world.publish(2, value, &reads, None);
}

/// Explores every interleaving of `f` exhaustively, and says
/// how many it ran.
fn model(name: &str, f: impl Fn() + Send + Sync + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = None;
    builder.check(move || {
        counted.fetch_add(1, Relaxed);
        f();
    });
    eprintln!("{name}: {} interleavings explored", runs.load(Relaxed));
    assert!(runs.load(Relaxed) > 1);
}

/// Race 1: an outer computation hits an inner entry while the write's
/// invalidation runs.
#[test]
fn a_hit_during_an_invalidation_never_outlives_it() {
    model("a_hit_during_an_invalidation_never_outlives_it", || {
        let world = World::new();
        let cached = world.cached_old();
        let writer = {
            let world = Arc::clone(&world);
            thread::spawn(move || {
                world.write();
                world.assert_fresh("after invalidate returned");
            })
        };
        read(&world, &cached);
        writer.join().unwrap();
        world.assert_fresh("at the end");
    });
}

/// A computation that reads the source of truth while it is written.
#[test]
fn a_fresh_read_during_a_write_is_never_published_stale() {
    model(
        "a_fresh_read_during_a_write_is_never_published_stale",
        || {
            let world = World::new();
            let writer = {
                let world = Arc::clone(&world);
                thread::spawn(move || {
                    world.write();
                    world.assert_fresh("after invalidate returned");
                })
            };
            let mut reads = Reads {
                deps: Vec::new(),
                hits: Vec::new(),
                basis: world.versions.now(),
            };
            let v = world.data.load(std::sync::atomic::Ordering::SeqCst);
            reads.deps.push(dep());
            world.publish(2, v, &reads, None);
            writer.join().unwrap();
            world.assert_fresh("at the end");
        },
    );
}

/// The hit entry is evicted (retired, unregistered) while the reader
/// publishes and the writer invalidates: its own basis stands in for it.
#[test]
fn a_hit_on_an_entry_evicted_meanwhile_is_checked_against_its_basis() {
    model(
        "a_hit_on_an_entry_evicted_meanwhile_is_checked_against_its_basis",
        || {
            let world = World::new();
            let cached = world.cached_old();
            let writer = {
                let world = Arc::clone(&world);
                thread::spawn(move || {
                    world.write();
                    world.assert_fresh("after invalidate returned");
                })
            };
            let evictor = {
                let world = Arc::clone(&world);
                let cached = Arc::clone(&cached);
                thread::spawn(move || {
                    cached.state.retire();
                    world.registry.unregister(cached.id, &cached.deps);
                })
            };
            read(&world, &cached);
            writer.join().unwrap();
            evictor.join().unwrap();
            world.assert_fresh("at the end");
        },
    );
}

/// `Cache::invalidate(key)` against a computation of that key in flight:
/// once it returns, nothing computed before it is live.
#[test]
fn a_key_invalidation_refuses_the_computation_in_flight() {
    model(
        "a_key_invalidation_refuses_the_computation_in_flight",
        || {
            let world = World::new();
            let key = 77;
            let basis = world.versions.now();
            let invalidator = {
                let world = Arc::clone(&world);
                thread::spawn(move || {
                    let t = {
                        let _reveal = world.reveal.lock().unwrap();
                        let t = world.versions.next();
                        world.versions.record(key, t);
                        t
                    };
                    let front = world.front.lock().unwrap();
                    for e in front.iter() {
                        e.kill(Cause::Invalidated);
                    }
                    for e in front.iter() {
                        assert!(!(e.state.is_live() && e.basis < t));
                    }
                })
            };
            let reads = Reads {
                deps: vec![dep()],
                hits: Vec::new(),
                basis,
            };
            world.publish(2, OLD, &reads, Some(key));
            invalidator.join().unwrap();
            for e in world.front.lock().unwrap().iter() {
                assert!(!e.state.is_live(), "computed before the key's invalidation");
            }
        },
    );
}

/// A commit seen before it is visible (SQLite's commit hook): the writer
/// holds the object and drops its entries, makes the new data visible, then
/// invalidates again and ends the hold. A reader that sees the new data
/// finds no entry of the old live, whenever it looks, and a value computed
/// from the old data meanwhile is never published.
#[test]
fn a_held_commit_leaves_no_old_entry_once_the_new_data_is_visible() {
    model(
        "a_held_commit_leaves_no_old_entry_once_the_new_data_is_visible",
        || {
            let world = World::new();
            let _cached = world.cached_old();
            let writer = {
                let world = Arc::clone(&world);
                thread::spawn(move || {
                    let hold = world.versions.hold(&[dep()], &[]);
                    let _ = invalidate(&world.versions, &world.registry, &[dep()], &[], |_, _| {});
                    // The commit becomes visible.
                    world
                        .data
                        .store(OLD + 1, std::sync::atomic::Ordering::SeqCst);
                    let _ = invalidate(&world.versions, &world.registry, &[dep()], &[], |_, _| {});
                    world.versions.release(&hold);
                    world.assert_fresh("after the hold ended");
                })
            };
            let mut reads = Reads {
                deps: Vec::new(),
                hits: Vec::new(),
                basis: world.versions.now(),
            };
            let v = world.data.load(std::sync::atomic::Ordering::SeqCst);
            reads.deps.push(dep());
            world.publish(2, v, &reads, None);
            if world.data.load(std::sync::atomic::Ordering::SeqCst) != OLD {
                world.assert_fresh("once the new data is visible");
            }
            writer.join().unwrap();
            world.assert_fresh("at the end");
        },
    );
}
