//! The shared tier against a raw client, in one run, on the local Redis
//! (127.0.0.1:6379 or `ULTRACACHE_REDIS_URL`):
//! - an L2 hit (the in-process L1 cold) against a raw `GET` of the same bytes
//!   with the same client library, from a sync caller and from an async one;
//! - invalidating one object that 1,000 shared entries depend on: time, and
//!   the Redis commands it costs.
//!
//! - the cross-node window: another process holds a copy; after this one's
//!   `invalidate` returns, is the copy still served there? Against
//!   `invalidate_acknowledged`, which waits for the other node (rounds that
//!   found a stale copy, and each call's latency, p50 and p99).
//!
//! `cargo bench --bench redis`

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ultracache::{invalidate, track, Cache, Config, Trackable};

#[derive(Clone, Serialize, Deserialize, Trackable)]
#[trackable(kind = "bench.redis-post")]
struct Post {
    id: i64,
}

static WRITER: Cache<u64, String> = Cache::new("bench-l2").forever().shared();
static READER: Cache<u64, String> = Cache::new("bench-l2").forever().shared();
static DEPENDENTS: Cache<u64, u64> = Cache::new("bench-dependents").forever().shared();

const KEYS: u64 = 1000;
const ROUNDS: u64 = 21;
const DEPENDENTS_N: u64 = 1000;

/// Run as the other node of the window measurement: holds a copy of `n`
/// on `hold n`, says whether it still has it on `check n`.
fn other_node(prefix: &str, url: &str) {
    use std::io::{BufRead, Write};
    Config::new()
        .redis(url)
        .redis_prefix(prefix)
        .install()
        .expect("configured once");
    let mut out = std::io::stdout();
    writeln!(out, "live").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let mut words = line.split_whitespace();
        let (verb, n) = (
            words.next(),
            words.next().and_then(|n| n.parse::<u64>().ok()),
        );
        match (verb, n) {
            (Some("hold"), Some(n)) => {
                WINDOW.get_or_compute(n, || window_value(n));
                writeln!(out, "holding").unwrap();
            }
            (Some("check"), Some(n)) => {
                let held = WINDOW.get(&n).is_some();
                writeln!(out, "{}", if held { "stale" } else { "dropped" }).unwrap();
            }
            _ => return,
        }
        out.flush().unwrap();
    }
}

static WINDOW: Cache<u64, String> = Cache::new("bench-window").forever().shared();

fn window_value(n: u64) -> String {
    track(&Post {
        id: 1_000_000 + n as i64,
    });
    format!("{n}")
}

/// Rounds in which the other node still served its copy right after the
/// call returned, and each call's latency.
fn window(prefix: &str, url: &str, acknowledged: bool, rounds: u64) -> (u64, Vec<Duration>) {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().expect("bench binary"))
        .args(["--other-node", prefix, url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the other node starts");
    let mut to = child.stdin.take().expect("stdin");
    let mut from = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let mut read = |line: &mut String| {
        line.clear();
        from.read_line(line).expect("the other node answers");
        line.trim().to_owned()
    };
    assert_eq!(read(&mut line), "live");
    // Both nodes heartbeat once subscribed (every second); an earlier other
    // node counts as live for 3 seconds after its last one.
    std::thread::sleep(Duration::from_millis(3500));
    let base = if acknowledged { 10_000 } else { 0 };
    let (mut stale, mut took) = (0, Vec::new());
    for n in base..base + rounds {
        writeln!(to, "hold {n}").unwrap();
        assert_eq!(read(&mut line), "holding");
        let post = Post {
            id: 1_000_000 + n as i64,
        };
        let start = Instant::now();
        if acknowledged {
            let acked = ultracache::redis::invalidate_acknowledged(&post, Duration::from_secs(2));
            assert_eq!(acked, Ok(1), "the other node acknowledged");
        } else {
            invalidate(&post);
        }
        took.push(start.elapsed());
        writeln!(to, "check {n}").unwrap();
        if read(&mut line) == "stale" {
            stale += 1;
        }
    }
    drop(to);
    let _ = child.wait();
    took.sort();
    (stale, took)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--other-node") {
        other_node(&args[i + 1], &args[i + 2]);
        return;
    }
    let url =
        std::env::var("ULTRACACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let Ok(client) = redis::Client::open(url.as_str()) else {
        println!("redis bench skipped: bad URL {url}");
        return;
    };
    let Ok(mut raw) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
        println!("redis bench skipped: no Redis at {url}");
        return;
    };
    let prefix = format!("bench-{}", std::process::id());
    Config::new()
        .redis(url.clone())
        .redis_prefix(prefix.clone())
        .install()
        .expect("configured once");

    // Fill Redis through one node; wait until every entry is there.
    let value = |k: u64| format!("{k:064}");
    for k in 0..KEYS {
        WRITER.get_or_compute(k, || value(k));
    }
    wait(|| ultracache::redis::tier_stats().stores >= KEYS);
    let raw_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}e:bench-l2:*"))
        .query(&mut raw)
        .expect("keys");

    // L2 hits (the reader's L1 entry is dropped, locally, before each read)
    // against raw GETs of the same bytes, round by round in turn, so that a
    // change in the machine's load reaches both alike: the median of each,
    // and the median of the rounds' ratios.
    let (mut l2_rounds, mut get_rounds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for k in 0..KEYS {
            READER.invalidate(&k);
            let v = READER.get_or_compute(k, || unreachable_compute(k));
            assert_eq!(v.len(), 64);
        }
        let l2 = start.elapsed() / KEYS as u32;
        let start = Instant::now();
        for key in &raw_keys {
            let bytes: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut raw).expect("get");
            assert!(bytes.is_some());
        }
        let get = start.elapsed() / raw_keys.len() as u32;
        ratios.push(l2.as_secs_f64() / get.as_secs_f64());
        l2_rounds.push(l2);
        get_rounds.push(get);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (l2, get) = (median(&mut l2_rounds), median(&mut get_rounds));
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let hits = READER.stats().shared_hits;

    // The same from an async caller (`get_or_compute_async` on a
    // multi-threaded tokio runtime, as a web handler calls it), against a
    // raw `GET` on a multiplexed async connection of the same client
    // library, round by round in turn.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (async_l2, async_get, async_ratios) = rt.block_on(async {
        let mut mux = client
            .get_multiplexed_async_connection()
            .await
            .expect("async connection");
        let (mut l2s, mut gets, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for k in 0..KEYS {
                READER.invalidate(&k);
                let v = READER
                    .get_or_compute_async(k, async move { unreachable_compute(k) })
                    .await;
                assert_eq!(v.len(), 64);
            }
            let l2 = start.elapsed() / KEYS as u32;
            let start = Instant::now();
            for key in &raw_keys {
                let bytes: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut mux)
                    .await
                    .expect("get");
                assert!(bytes.is_some());
            }
            let get = start.elapsed() / raw_keys.len() as u32;
            ratios.push(l2.as_secs_f64() / get.as_secs_f64());
            l2s.push(l2);
            gets.push(get);
        }
        ratios.sort_by(f64::total_cmp);
        (median(&mut l2s), median(&mut gets), ratios)
    });
    let async_ratio = async_ratios[async_ratios.len() / 2];

    // One object, 1,000 shared dependents.
    let post = Post { id: 1 };
    for k in 0..DEPENDENTS_N {
        DEPENDENTS.get_or_compute(k, || {
            track(&post);
            k
        });
    }
    wait(|| ultracache::redis::tier_stats().stores >= KEYS + DEPENDENTS_N);
    let before = commands(&mut raw);
    let start = Instant::now();
    let dropped = invalidate(&post);
    let took = start.elapsed();
    let after = commands(&mut raw);

    println!(
        "L2 hit (L1 cold), {} hits: {:?} each, {:.0}/s",
        hits,
        l2,
        1.0 / l2.as_secs_f64()
    );
    println!(
        "raw GET, same bytes:   {:?} each, {:.0}/s",
        get,
        1.0 / get.as_secs_f64()
    );
    println!(
        "ratio L2 hit / raw GET: {ratio:.2} (median of {ROUNDS} rounds in turn; range {:.2}–{:.2})",
        ratios[0],
        ratios[ratios.len() - 1]
    );
    println!(
        "async caller: L2 hit {async_l2:?} each, raw async GET {async_get:?} each; \
         ratio {async_ratio:.2} (median of {ROUNDS} rounds in turn; range {:.2}–{:.2})",
        async_ratios[0],
        async_ratios[async_ratios.len() - 1]
    );
    println!(
        "invalidate 1 object with {DEPENDENTS_N} dependents: {took:?} ({dropped} dropped in process); \
         Redis commands: {} (the invalidation script and what it ran, plus the INFO calls)",
        after.saturating_sub(before)
    );

    let rounds = 200;
    for acknowledged in [false, true] {
        let (stale, took) = window(&prefix, &url, acknowledged, rounds);
        let p = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        println!(
            "{}: the other node served its copy right after the call in {stale} of {rounds} \
             rounds; call latency p50 {:?}, p99 {:?}",
            if acknowledged {
                "invalidate_acknowledged"
            } else {
                "invalidate (plain)     "
            },
            p(0.5),
            p(0.99)
        );
    }

    let _: redis::RedisResult<()> = redis::cmd("EVAL")
        .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
        .arg(0)
        .arg(format!("{{{prefix}}}*"))
        .query(&mut raw);
}

fn unreachable_compute(k: u64) -> String {
    panic!("key {k} should come from Redis")
}

fn wait(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Commands Redis has run, by its own count (scripts' calls included).
fn commands(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(con)
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}
