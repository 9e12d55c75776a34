//! The cost of reading a cache model: `Model::get` on a hit (decoding its
//! postcard bytes) against a `#[cached]` function returning the same struct
//! (a clone), and `get` of a model with one reference (two lookups, two
//! decodes). In-process store, no shared tier.
//!
//! `cargo bench --bench models`

use std::hint::black_box;

use serde::{Deserialize, Serialize};
use ultracache::{CacheModel, Reference};

const KEYS: u64 = 1024;

#[derive(CacheModel, Serialize, Deserialize, Clone)]
#[cache(name = "bench.workplace", forever)]
struct Workplace {
    #[cache(key)]
    id: u64,
    name: String,
    employees: u32,
}

#[derive(CacheModel, Serialize, Deserialize)]
#[cache(name = "bench.user", forever)]
struct User {
    #[cache(key)]
    id: u64,
    email: String,
    workplace: Reference<Workplace>,
}

fn workplace(id: u64) -> Workplace {
    Workplace {
        id,
        name: format!("workplace number {id:08}"),
        employees: 40,
    }
}

#[ultracache::cached(forever)]
fn cached_workplace(id: u64) -> Workplace {
    workplace(id)
}

fn main() {
    for id in 0..KEYS {
        workplace(id).save().unwrap();
        cached_workplace(id);
        User {
            id,
            email: format!("user{id}@example.com"),
            workplace: Reference::to(WorkplaceKey::new(id)),
        }
        .save()
        .unwrap();
    }
    divan::main();
}

fn next_key() -> u64 {
    thread_local!(static N: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    N.with(|n| {
        let k = n.get();
        n.set((k + 1) % KEYS);
        k
    })
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn cached_fn_clone() -> u32 {
    cached_workplace(black_box(next_key())).employees
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn model_get() -> u32 {
    Workplace::get(&WorkplaceKey::new(black_box(next_key()))).map_or(0, |w| w.employees)
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn model_get_with_reference() -> u32 {
    User::get(&UserKey::new(black_box(next_key())))
        .ok()
        .and_then(|u| u.workplace.loaded().map(|w| w.employees))
        .unwrap_or(0)
}
