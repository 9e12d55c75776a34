//! Invalidation against removal, and memory per entry, side by side in one
//! run (issue figures: "invalidate one object with 10,000 dependents" and
//! "memory per entry, RSS over 200,000 entries").
//!
//! `cargo bench --bench invalidation`
//!
//! - Invalidating one object that N entries depend on (N = 10,000 and
//!   100,000), against quick_cache and moka removing the same N keys; the
//!   median of 7 rounds each.
//! - The p99 of hits on other keys (two reader threads) while a
//!   100,000-dependent invalidation runs, against the p99 with no
//!   invalidation running.
//! - Resident memory per entry (`u64 -> u64`, 1 and 10 dependencies), each
//!   measured in a fresh process of this binary, against quick_cache
//!   holding the same keys and values.

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ultracache::{invalidate, track, track_dep, Cache, Dep, Trackable};

#[derive(Trackable)]
#[trackable(kind = "bench.inval.post")]
struct Post {
    id: u64,
}

static DEPENDENTS: Cache<u64, u64> = Cache::new("bench.dependents").forever();
static OTHER: Cache<u64, u64> = Cache::new("bench.other").forever();

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fill(n: u64, post: &Post) {
    for k in 0..n {
        DEPENDENTS.get_or_compute(k, || {
            track(post);
            k
        });
    }
}

fn invalidation(n: u64) {
    let post = Post { id: 42 };
    let mut ours = Vec::new();
    let mut quick = Vec::new();
    let mut moka_t = Vec::new();
    let mut cycles = Vec::new();
    for _ in 0..7 {
        // The whole cycle too: filling again (over what the last round's
        // invalidation left), maintenance, and the invalidation.
        let cycle = Instant::now();
        fill(n, &post);
        ultracache::run_pending_tasks();
        let t = Instant::now();
        let dropped = invalidate(&post);
        ours.push(t.elapsed());
        cycles.push(cycle.elapsed());
        assert_eq!(dropped as u64, n);

        let q = quick_cache::sync::Cache::<u64, u64>::new(n as usize * 2);
        for k in 0..n {
            q.insert(k, k);
        }
        let t = Instant::now();
        for k in 0..n {
            black_box(q.remove(&k));
        }
        quick.push(t.elapsed());

        let m = moka::sync::Cache::<u64, u64>::new(n * 2);
        for k in 0..n {
            m.insert(k, k);
        }
        m.run_pending_tasks();
        let t = Instant::now();
        for k in 0..n {
            m.invalidate(&k);
        }
        moka_t.push(t.elapsed());
    }
    let (ours, quick, moka_t) = (median(ours), median(quick), median(moka_t));
    let cycle = median(cycles);
    println!(
        "fill {n} + maintenance + invalidate, whole cycle: {:.2} ms ({:.0} ns/entry)",
        cycle.as_secs_f64() * 1e3,
        cycle.as_secs_f64() * 1e9 / n as f64,
    );
    println!(
        "invalidate 1 object, {n} dependents: ultracache {:.2} ms ({:.0} ns/entry); \
         quick_cache remove x{n} {:.2} ms; moka invalidate x{n} {:.2} ms; \
         {:.1}x quick_cache, {:.2}x moka",
        ours.as_secs_f64() * 1e3,
        ours.as_secs_f64() * 1e9 / n as f64,
        quick.as_secs_f64() * 1e3,
        moka_t.as_secs_f64() * 1e3,
        ours.as_secs_f64() / quick.as_secs_f64(),
        ours.as_secs_f64() / moka_t.as_secs_f64(),
    );
}

/// Hit latency p99 on other keys, with and without a 100,000-dependent
/// invalidation running meanwhile.
fn hits_during_invalidation() {
    const N: u64 = 100_000;
    let post = Post { id: 43 };
    for k in 0..1024 {
        OTHER.get_or_compute(k, || k);
    }
    let p99 = |during: bool| -> (Duration, usize) {
        fill(N, &post);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(3));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (stop, start) = (Arc::clone(&stop), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut lat = Vec::with_capacity(1 << 20);
                    // Warm: the fill pushed the keys out of the CPU's
                    // caches, and the first reads would measure that.
                    for k in 0..1024u64 {
                        black_box(OTHER.get(&k));
                    }
                    start.wait();
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        black_box(OTHER.get(&(k % 1024)));
                        lat.push(t.elapsed());
                        k += 1;
                    }
                    lat
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        if during {
            invalidate(&post);
        } else {
            // As long, with nothing invalidated.
            while t.elapsed() < Duration::from_millis(20) {
                std::hint::spin_loop();
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Duration> = readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        all.sort();
        if !during {
            invalidate(&post);
        }
        (all[all.len() * 99 / 100], all.len())
    };
    let (quiet, n_quiet) = p99(false);
    let (busy, n_busy) = p99(true);
    println!(
        "hit p99 on other keys: {:.0} ns with nothing invalidated ({n_quiet} hits), \
         {:.0} ns while 100000 dependents are invalidated ({n_busy} hits)",
        quiet.as_secs_f64() * 1e9,
        busy.as_secs_f64() * 1e9,
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const ENTRIES: u64 = 200_000;

static MEMORY: Cache<u64, u64> = Cache::new("bench.memory").forever();

/// In a fresh process: the resident bytes per entry of `what`.
fn memory_child(what: &str, deps: u64) {
    let before = rss_bytes();
    match what {
        "ultracache" => {
            for k in 0..ENTRIES {
                MEMORY.get_or_compute(k, || {
                    for d in 0..deps {
                        track_dep(Dep::object(Post::KIND, &(k * 16 + d)));
                    }
                    k
                });
            }
            ultracache::run_pending_tasks();
            assert_eq!(
                ultracache::stats().cache("bench.memory").unwrap().entries,
                ENTRIES
            );
        }
        _ => {
            let q = quick_cache::sync::Cache::<u64, u64>::new(ENTRIES as usize);
            for k in 0..ENTRIES {
                q.insert(k, k);
            }
            black_box(&q);
            println!("{}", (rss_bytes() - before) / ENTRIES);
            return;
        }
    }
    println!("{}", (rss_bytes() - before) / ENTRIES);
}

fn memory() {
    let me = std::env::current_exe().unwrap();
    let run = |what: &str, deps: u64| -> u64 {
        let out = Command::new(&me)
            .args(["--memory", what, &deps.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let quick = run("quick_cache", 0);
    for deps in [1, 10] {
        let ours = run("ultracache", deps);
        println!(
            "memory per entry (u64 -> u64, {deps} dependencies, {ENTRIES} entries): \
             ultracache {ours} B, quick_cache {quick} B: {:.1}x",
            ours as f64 / quick.max(1) as f64
        );
    }
}

static HITS: Cache<u64, String> = Cache::new("bench.hits").forever();

#[inline(never)]
fn ours_hits() -> usize {
    (0..1_000_000u64)
        .map(|k| HITS.get(black_box(&(k % 1024))).map_or(0, |v| v.len()))
        .sum()
}

#[ultracache::cached(forever)]
fn cached_value(k: u64) -> String {
    format!("{k:064}")
}

#[inline(never)]
fn cached_hits() -> usize {
    (0..1_000_000u64)
        .map(|k| cached_value(black_box(k % 1024)).len())
        .sum()
}

#[inline(never)]
fn quick_hits(q: &quick_cache::sync::Cache<u64, String>) -> usize {
    (0..1_000_000u64)
        .map(|k| q.get(black_box(&(k % 1024))).map_or(0, |v| v.len()))
        .sum()
}

fn main() {
    ultracache::Config::new()
        .default_store(ultracache::StoreConfig::new().max_entries(4_000_000))
        .install()
        .expect("the configuration installs first");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory") {
        let deps = args.get(i + 2).and_then(|d| d.parse().ok()).unwrap_or(1);
        memory_child(&args[i + 1], deps);
        return;
    }
    if args.iter().any(|a| a == "--profile-hits") {
        // 1,000,000 hits each, for `valgrind --tool=callgrind
        // --toggle-collect=invalidation::ours_hits` (or `quick_hits`).
        for k in 0..1024u64 {
            HITS.get_or_compute(k, || format!("{k:064}"));
        }
        let q = quick_cache::sync::Cache::<u64, String>::new(10_000);
        for k in 0..1024u64 {
            q.insert(k, format!("{k:064}"));
        }
        for k in 0..1024u64 {
            cached_value(k);
        }
        black_box(ours_hits());
        black_box(cached_hits());
        black_box(quick_hits(&q));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        // One invalidation of N dependents, for `valgrind --tool=callgrind`.
        let n = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        let post = Post { id: 44 };
        fill(n, &post);
        black_box(invalidate(&post));
        return;
    }
    invalidation(10_000);
    invalidation(100_000);
    hits_during_invalidation();
    memory();
}
