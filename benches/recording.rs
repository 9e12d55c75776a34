//! The cost of recording a read inside a frame, and of invalidating an object
//! that 1, 100 and 10,000 entries depend on.
//!
//! `cargo bench --bench recording`

use std::hint::black_box;

use ultracache::{capture, invalidate, track, Cache, Trackable};

fn main() {
    divan::main();
}

#[derive(Clone, Trackable)]
#[trackable(kind = "bench.post")]
struct Post {
    id: i64,
}

const READS: usize = 1000;

/// One recorded read (amortized over a frame of 1,000 reads).
#[divan::bench(counter = divan::counter::ItemsCount::new(READS))]
fn recorded_read() -> usize {
    let posts: Vec<Post> = (0..READS as i64).map(|id| Post { id }).collect();
    let ((), deps) = capture(|| {
        for p in &posts {
            track(black_box(p));
        }
    });
    deps.len()
}

/// A read outside any frame: what a `#[tracks]` loader costs when nothing is
/// being cached.
#[divan::bench]
fn read_outside_a_frame() {
    track(black_box(&Post { id: 1 }));
}

static DEPENDENTS: Cache<u64, u64> = Cache::new("dependents").forever();

#[divan::bench(args = [1, 100, 10_000], sample_count = 30, sample_size = 1)]
fn invalidate_object(bencher: divan::Bencher<'_, '_>, dependents: u64) {
    let post = Post { id: 42 };
    bencher
        .with_inputs(|| {
            for k in 0..dependents {
                DEPENDENTS.get_or_compute(k, || {
                    track(&post);
                    k
                });
            }
        })
        .bench_local_values(|()| invalidate(&post));
}
