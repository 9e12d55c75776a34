//! A store bounded in bytes keeps the memory its entries take within the
//! bound: not only their values, but their slots, their places in the
//! store and the cache's map, and their links in the registry — small
//! values are where that bookkeeping is most of the memory. Entries left
//! by an invalidation hold memory until the store drops them, so they count
//! too.
//!
//! The heap is measured with a counting allocator: what Rust code holds,
//! not what the allocator keeps after frees.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use serde::{Deserialize, Serialize};
use ultracache::{
    cached, invalidate_deps, run_pending_tasks, stats, track_dep, Cache, CacheModel, Config, Dep,
    FromMiss, HeapSize, Kind, StoreConfig,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter only adds and subtracts the sizes of those calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new) };
        if !p.is_null() {
            LIVE.fetch_add(new, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BOUND: u64 = 2 << 20;
/// Keys written into each store: many times what fits.
const KEYS: u64 = 100_000;

const ROW: Kind = Kind::new("memory_bound.row");
const PAIR: Kind = Kind::new("memory_bound.pair");
const SITE: Kind = Kind::new("memory_bound.site");

static ONE: Cache<u64, u64> = Cache::new("memory_bound.one").store("one").forever();
static TEN: Cache<u64, u64> = Cache::new("memory_bound.ten").store("ten").forever();
static SHARED: Cache<u64, u64> = Cache::new("memory_bound.shared").store("shared").forever();
static LEFT: Cache<u64, u64> = Cache::new("memory_bound.left").store("left").forever();

static SEARCHES: Cache<String, u64> = Cache::new("memory_bound.searches")
    .store("searches")
    .key_weigher(String::heap_size)
    .forever();

/// A search a request chose: its key outweighs its value many times.
#[cached(store = "keys", forever)]
fn search(query: String) -> u64 {
    query.len() as u64
}

/// A model keyed by a name a request chose.
#[derive(CacheModel, Serialize, Deserialize)]
#[cache(name = "memory_bound.profile", store = "profiles", forever)]
struct Profile {
    #[cache(key)]
    handle: String,
    visits: u64,
}

impl FromMiss for Profile {
    fn from_miss(key: &ProfileKey) -> Option<Self> {
        Some(Profile {
            handle: String::new(),
            visits: key.handle.len() as u64,
        })
    }
}

/// A 2 KiB query of its own for `k`.
fn query(k: u64) -> String {
    format!("{k:0>2048}")
}

fn live() -> u64 {
    LIVE.load(Relaxed) as u64
}

/// Computes `keys` in `cache`, each reading what `reads` gives it.
fn fill(cache: &'static Cache<u64, u64>, keys: std::ops::Range<u64>, reads: fn(u64) -> Vec<Dep>) {
    for k in keys {
        let v = cache.get_or_compute(k, || {
            for dep in reads(k) {
                track_dep(dep);
            }
            k
        });
        assert_eq!(v, k);
    }
}

/// A row of its own.
fn own(k: u64) -> Vec<Dep> {
    vec![Dep::object(ROW, &k)]
}

fn entries(cache: &str) -> u64 {
    stats().cache(cache).map_or(0, |c| c.entries)
}

/// What `cache`'s store holds of the heap after `fill` ran, and its entries.
fn held(cache: &'static Cache<u64, u64>, name: &str, reads: fn(u64) -> Vec<Dep>) -> (u64, u64) {
    let before = live();
    fill(cache, 0..KEYS, reads);
    run_pending_tasks();
    (live().saturating_sub(before), entries(name))
}

/// What `cache` holds of the heap after `read` ran for many 2 KiB keys.
fn keyed(what: &str, cache: &str, read: impl Fn(u64)) {
    let before = live();
    for k in 0..KEYS / 20 {
        read(k);
    }
    run_pending_tasks();
    within(what, live().saturating_sub(before), entries(cache));
}

fn within(what: &str, held: u64, entries: u64) {
    println!("{what}: {held} bytes for {entries} entries of a {BOUND}-byte bound");
    assert!(
        held <= BOUND + BOUND / 10,
        "{what}: the store's entries hold {held} bytes ({entries} entries), past its \
         {BOUND}-byte bound"
    );
    // Not met by holding nothing: the bound is used.
    assert!(
        held >= BOUND / 4 && entries >= 100,
        "{what}: only {held} bytes ({entries} entries) held of a {BOUND}-byte bound"
    );
}

#[test]
fn small_entries_keep_their_whole_memory_within_the_bound() {
    Config::new()
        .store("one", StoreConfig::new().max_bytes(BOUND))
        .store("ten", StoreConfig::new().max_bytes(BOUND))
        .store("shared", StoreConfig::new().max_bytes(BOUND))
        .store("left", StoreConfig::new().max_bytes(BOUND))
        .store("keys", StoreConfig::new().max_bytes(BOUND))
        .store("searches", StoreConfig::new().max_bytes(BOUND))
        .store("profiles", StoreConfig::new().max_bytes(BOUND))
        .install()
        .expect("configured once");
    // What is allocated once for the process (the version tables) is not
    // the stores'.
    static WARM: Cache<u64, u64> = Cache::new("memory_bound.warm");
    fill(&WARM, 0..1, own);
    invalidate_deps(&own(0));

    let (bytes, n) = held(&ONE, "memory_bound.one", |k| own(KEYS + k));
    within("u64 -> u64, one dependency", bytes, n);

    // Ten rows, two of them shared with the next key.
    let (bytes, n) = held(&TEN, "memory_bound.ten", |k| {
        (0..10)
            .map(|d| Dep::object(ROW, &((1 << 40) | (k * 8 + d))))
            .collect()
    });
    within("u64 -> u64, ten dependencies", bytes, n);

    // A row shared by two keys, and one every key reads.
    let (bytes, n) = held(&SHARED, "memory_bound.shared", |k| {
        vec![Dep::object(PAIR, &(k / 2)), Dep::object(SITE, &0u64)]
    });
    within(
        "u64 -> u64, dependencies shared by two and by all",
        bytes,
        n,
    );

    // Keys a request chose, far heavier than their values: `#[cached]`
    // weighs a `String` argument, a `Cache` its key weigher's estimate.
    keyed("#[cached] with 2 KiB String keys", "search", |k| {
        assert_eq!(search(query(k)), 2048);
    });
    keyed(
        "Cache::key_weigher with 2 KiB String keys",
        "memory_bound.searches",
        |k| assert_eq!(SEARCHES.get_or_compute(query(k), || k), k),
    );
    keyed(
        "a model cache with 2 KiB String keys",
        "memory_bound.profile",
        |k| {
            let key = ProfileKey { handle: query(k) };
            assert_eq!(Profile::get(&key).map(|p| p.visits).ok(), Some(2048));
        },
    );

    // Entries an invalidation ended hold their memory until the store
    // drops them: before it does, and after new entries came, the store
    // is within its bound. Two in five end: too few for the store to sweep
    // them for their number alone.
    let before = live();
    fill(&LEFT, 0..KEYS, |k| own((2 << 40) | k));
    let kept: Vec<u64> = (0..KEYS).filter(|&k| LEFT.get(&k).is_some()).collect();
    assert!(kept.len() >= 1_000, "{} entries kept", kept.len());
    let ended: Vec<u64> = kept.iter().copied().filter(|k| k % 5 < 2).collect();
    let deps: Vec<Dep> = ended.iter().flat_map(|k| own((2 << 40) | k)).collect();
    assert_eq!(invalidate_deps(&deps), ended.len());
    assert_eq!(
        entries("memory_bound.left"),
        (kept.len() - ended.len()) as u64
    );
    within(
        "after an invalidation of two in five entries",
        live().saturating_sub(before),
        kept.len() as u64,
    );
    fill(&LEFT, KEYS..KEYS + KEYS / 2, |k| own((2 << 40) | k));
    let n = entries("memory_bound.left");
    within(
        "new entries after an invalidation",
        live().saturating_sub(before),
        n,
    );
    run_pending_tasks();
    within(
        "after maintenance",
        live().saturating_sub(before),
        entries("memory_bound.left"),
    );
}
