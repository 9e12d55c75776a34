//! The shared tier on a Redis Cluster of the bench's own (three primaries),
//! the one-slot layout against the sharded one, in one run:
//! - commands per primary (`INFO commandstats`) for a workload over 10,000
//!   dependencies (10,000 entries stored, read from the cluster by a second
//!   L1, 1,000 of their objects invalidated): max/min over the primaries;
//! - an L2 hit (the L1 cold): time per hit;
//! - invalidating one object that 1,000 entries depend on;
//! - a key that misses on 4 nodes at once: how many times it is computed.
//!
//! The layout is chosen once per process, so each layout runs in a child
//! process of this bench (the cluster, started here, is shared; each child
//! has its own prefix), and the two alternate, round by round.
//!
//! `cargo bench --bench redis_cluster`

#[path = "../tests/common/redis_cluster.rs"]
mod redis_cluster;
#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ultracache::{invalidate, track, Cache, Config, Trackable};

#[derive(Clone, Serialize, Deserialize, Trackable)]
#[trackable(kind = "bench.cluster-post")]
struct Post {
    id: i64,
}

static WRITER: Cache<u64, String> = Cache::new("bench-cluster").forever().shared();
static READER: Cache<u64, String> = Cache::new("bench-cluster").forever().shared();
static FAN: Cache<u64, u64> = Cache::new("bench-cluster-fan").forever().shared();
static NODES: [Cache<u64, u64>; 4] = [
    Cache::new("bench-cluster-flight").forever().shared(),
    Cache::new("bench-cluster-flight").forever().shared(),
    Cache::new("bench-cluster-flight").forever().shared(),
    Cache::new("bench-cluster-flight").forever().shared(),
];
static FLIGHT_RUNS: AtomicU64 = AtomicU64::new(0);

const DEPS: u64 = 10_000;
const HITS: u64 = 2_000;
const FAN_OUT: u64 = 1_000;
const FLIGHT_KEYS: u64 = 50;

fn value(id: u64) -> String {
    track(&Post { id: id as i64 });
    format!("{id:0>64}")
}

/// Waits (bounded) until the cluster answered every store this node sent.
fn settled(expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = ultracache::redis::tier_stats();
        if s.stores + s.refused >= expected || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One layout's figures, printed as `key value` lines.
fn child(urls: Vec<String>, prefix: &str, sharded: bool) {
    Config::new()
        .redis_cluster(urls.clone())
        .redis_prefix(prefix)
        .redis_sharded(sharded)
        .install()
        .expect("configured once");
    let ports: Vec<String> = urls;
    let stats = || -> Vec<u64> {
        ports
            .iter()
            .map(|u| {
                let mut c = redis::Client::open(u.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let info: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query(&mut c)
                    .unwrap();
                info.lines()
                    .filter_map(|l| l.split("calls=").nth(1))
                    .filter_map(|l| l.split(',').next()?.parse::<u64>().ok())
                    .sum()
            })
            .collect()
    };
    // The workload over 10,000 dependencies, counted per primary.
    let before = stats();
    for id in 0..DEPS {
        WRITER.get_or_compute(id, || value(id));
    }
    settled(DEPS);
    for id in 0..DEPS {
        READER.get_or_compute(id, || value(id));
        READER.invalidate(&id);
    }
    for id in (0..DEPS).step_by(10) {
        invalidate(&Post { id: id as i64 });
    }
    let after = stats();
    let calls: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    println!(
        "calls {}",
        calls
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );

    // L2 hits: the reader's L1 is dropped before each.
    for id in 0..HITS {
        WRITER.get_or_compute(id + DEPS, || value(id + DEPS));
    }
    settled(DEPS + HITS);
    let start = Instant::now();
    for id in 0..HITS {
        READER.invalidate(&(id + DEPS));
        READER.get_or_compute(id + DEPS, || unreachable!("a hit in the cluster"));
    }
    println!("hit_ns {}", start.elapsed().as_nanos() as u64 / HITS);

    // One object, 1,000 dependents.
    for id in 0..FAN_OUT {
        FAN.get_or_compute(id, || {
            track(&Post { id: -1 });
            id
        });
    }
    let s = ultracache::redis::tier_stats();
    settled(s.stores + s.refused + FAN_OUT);
    let start = Instant::now();
    invalidate(&Post { id: -1 });
    println!("fan_ns {}", start.elapsed().as_nanos());

    // A key that misses on 4 nodes at once.
    let barrier = Barrier::new(NODES.len());
    std::thread::scope(|s| {
        for node in &NODES {
            let barrier = &barrier;
            s.spawn(move || {
                for k in 0..FLIGHT_KEYS {
                    barrier.wait();
                    node.get_or_compute(k, || {
                        FLIGHT_RUNS.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        k
                    });
                }
            });
        }
    });
    println!(
        "flight_runs {}",
        FLIGHT_RUNS.load(Ordering::SeqCst) as f64 / FLIGHT_KEYS as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--layout-child") {
        let sharded = args[i + 1] == "sharded";
        let prefix = args[i + 2].clone();
        let urls = args[i + 3].split(',').map(String::from).collect();
        child(urls, &prefix, sharded);
        return;
    }
    let Some(cluster) = redis_cluster::Cluster::start() else {
        eprintln!("redis_cluster bench: redis-server/redis-cli cannot start a cluster; skipped");
        return;
    };
    let urls: Vec<String> = cluster.ports.iter().map(|p| cluster.url(*p)).collect();
    let exe = std::env::current_exe().expect("the bench binary");
    let mut figures: std::collections::BTreeMap<(&str, String), Vec<f64>> = Default::default();
    let rounds = 3;
    for round in 0..rounds {
        for layout in ["one-slot", "sharded"] {
            let out = Command::new(&exe)
                .args([
                    "--layout-child",
                    layout,
                    &format!("bench-{layout}-{round}-{}", std::process::id()),
                    &urls.join(","),
                ])
                .output()
                .expect("the layout's run");
            assert!(
                out.status.success(),
                "{layout}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some((k, v)) = line.split_once(' ') else {
                    continue;
                };
                if k == "calls" {
                    let calls: Vec<f64> = v.split(',').filter_map(|c| c.parse().ok()).collect();
                    let (max, min) = calls
                        .iter()
                        .fold((0f64, f64::MAX), |(a, b), &c| (a.max(c), b.min(c)));
                    println!("{layout} round {round}: commands per primary {v}");
                    figures
                        .entry((layout, "balance".into()))
                        .or_default()
                        .push(max / min.max(1.0));
                } else if let Ok(v) = v.parse::<f64>() {
                    figures.entry((layout, k.to_owned())).or_default().push(v);
                }
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let get = |layout: &str, k: &str| median(&figures[&(layout, k.to_owned())]);
    println!("\nmedians of {rounds} rounds per layout (three primaries):");
    for (k, what) in [
        ("balance", "commands per primary, max/min"),
        ("hit_ns", "L2 hit, ns"),
        ("fan_ns", "invalidate one object with 1,000 dependents, ns"),
        (
            "flight_runs",
            "computations of a key missing on 4 nodes at once",
        ),
    ] {
        let (one, sharded) = (get("one-slot", k), get("sharded", k));
        println!(
            "{what:<52} one-slot {one:>12.1}  sharded {sharded:>12.1}  sharded/one-slot {:.2}",
            sharded / one
        );
    }
}
