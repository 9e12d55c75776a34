//! The cost of a cache hit: `#[cached]` against a raw moka get, a raw
//! quick_cache get and the `cached` crate's `#[cached]`, on 1 and 2 threads.
//! Key: u64; value: a 64-byte String (cloned on every hit by all four).
//!
//! `cargo bench --bench hit`

use std::hint::black_box;
use std::sync::LazyLock;

fn main() {
    // Warm every cache before timing.
    for k in 0..KEYS {
        ultracache_hit(k);
        MOKA.insert(k, value(k));
        QUICK.insert(k, value(k));
        cached_crate_hit(k);
    }
    divan::main();
}

const KEYS: u64 = 1024;

fn value(k: u64) -> String {
    format!("{k:064}")
}

/// Each call asks for the next key of a small, hot set.
fn next_key() -> u64 {
    thread_local!(static N: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    N.with(|n| {
        let k = n.get();
        n.set((k + 1) % KEYS);
        k
    })
}

#[ultracache::cached(forever)]
fn ultracache_hit(k: u64) -> String {
    value(k)
}

#[cached::proc_macro::cached]
fn cached_crate_hit(k: u64) -> String {
    value(k)
}

static MOKA: LazyLock<moka::sync::Cache<u64, String>> =
    LazyLock::new(|| moka::sync::Cache::new(10_000));

static QUICK: LazyLock<quick_cache::sync::Cache<u64, String>> =
    LazyLock::new(|| quick_cache::sync::Cache::new(10_000));

// Every contender returns the value's length, so the clone is made and
// dropped inside the timed call, as in a caller that uses the value.

#[divan::bench(threads = [1, 2])]
fn ultracache_cached() -> usize {
    ultracache_hit(black_box(next_key())).len()
}

#[divan::bench(threads = [1, 2])]
fn cached_crate() -> usize {
    cached_crate_hit(black_box(next_key())).len()
}

#[divan::bench(threads = [1, 2])]
fn moka_get() -> usize {
    MOKA.get(&black_box(next_key())).map_or(0, |v| v.len())
}

#[divan::bench(threads = [1, 2])]
fn quick_cache_get() -> usize {
    QUICK.get(&black_box(next_key())).map_or(0, |v| v.len())
}

/// The floor every contender pays: cloning (and dropping) the 64-byte value.
#[divan::bench(threads = [1, 2])]
fn clone_only(bencher: divan::Bencher<'_, '_>) {
    let v = value(7);
    bencher.bench(|| black_box(&v).clone().len());
}
