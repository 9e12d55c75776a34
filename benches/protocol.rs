//! The publish protocol under load: the share of wide computations stored
//! while unrelated objects are written, and what publishing and nesting
//! cost.
//!
//! `cargo bench --bench protocol`

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use ultracache::{invalidate_deps, track_id, Cache, Dep, Trackable};

#[derive(Trackable)]
#[trackable(kind = "bench.row")]
struct Row {
    id: u32,
}

static WIDE: Cache<u32, u32> = Cache::new("bench.wide");
static NEXT: AtomicU32 = AtomicU32::new(0);

/// One wide computation: 1,000 reads, with `writes` unrelated
/// invalidations while it runs. Returns whether it was stored.
fn wide(writes: u32) -> bool {
    let n = NEXT.fetch_add(1, Relaxed);
    let base = n.wrapping_mul(1_000_000);
    WIDE.get_or_compute(n, || {
        for id in 0..1000 {
            track_id::<Row>(base + id);
        }
        for id in 0..writes {
            invalidate_deps(&[Dep::object(Row::KIND, &(base + 500_000 + id))]);
        }
        n
    });
    let stored = WIDE.get(&n).is_some();
    WIDE.invalidate(&n);
    stored
}

fn main() {
    let attempts = 100;
    let stored = (0..attempts).filter(|_| wide(200)).count();
    println!("wide computations stored under 200 unrelated invalidations: {stored} of {attempts}");
    divan::main();
}

/// A computation of 1,000 reads, published with no write meanwhile.
#[divan::bench]
fn wide_publish_quiet() -> bool {
    wide(black_box(0))
}

/// The same, with 200 unrelated writes during it (each write's own cost
/// included).
#[divan::bench]
fn wide_publish_under_200_writes() -> bool {
    wide(black_box(200))
}

static INNER: Cache<u32, u64> = Cache::new("bench.inner").forever();
static OUTER: Cache<u32, u64> = Cache::new("bench.outer");

/// An outer computation of 100 inner hits (each with 10 dependencies),
/// published: what nesting costs.
#[divan::bench]
fn outer_of_100_inner_hits(bencher: divan::Bencher<'_, '_>) {
    for k in 0..100u32 {
        INNER.get_or_compute(k, || {
            for d in 0..10 {
                track_id::<Row>(k * 10 + d);
            }
            u64::from(k)
        });
    }
    bencher.bench(|| {
        let key = NEXT.fetch_add(1, Relaxed);
        let v = OUTER.get_or_compute(key, || {
            (0..100u32).map(|k| INNER.get(&k).unwrap_or(0)).sum()
        });
        OUTER.invalidate(&key);
        v
    });
}
