//! Sync callers read the shared tier on their own thread (a pooled blocking
//! connection, no hop to the tier's thread). Tried the hard way: several
//! threads read while the server is paused past the timeout and resumed.
//! Every read answers its own key (a late reply never answers the next
//! call: a reply of another key would be read as a damaged entry and
//! deleted), no call waits past the bound, and reads are answered by Redis
//! again after the pause; many callers at once share a bounded pool.
//! Against a redis-server of the test's own.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::{clients, free_port, signal, start_redis, wait_until, Stopped};
use ultracache::redis::tier_stats;
use ultracache::{Cache, Config};

static VALUES: Cache<u64, String> = Cache::new("direct").forever().shared();

const KEYS: u64 = 200;
const TIMEOUT: Duration = Duration::from_millis(100);

fn value(k: u64) -> String {
    format!("value of key {k}")
}

fn entries(r: &mut redis::Connection) -> usize {
    redis::cmd("KEYS")
        .arg("{direct-reads}e:direct:*")
        .query::<Vec<String>>(r)
        .unwrap()
        .len()
}

#[test]
fn sync_reads_through_a_paused_redis_answer_their_own_key_in_bounded_time() {
    let port = free_port();
    let Some(server) = start_redis(port) else {
        common::redis_server::skip("direct reads");
        return;
    };
    // Stopped when the test ends, passed or failed.
    let server = Stopped(server);
    Config::new()
        .redis(format!("redis://127.0.0.1:{port}"))
        .redis_prefix("direct-reads")
        .redis_timeout(TIMEOUT)
        .install()
        .expect("configured once");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut r = client.get_connection().unwrap();
    for k in 0..KEYS {
        assert_eq!(VALUES.get_or_compute(k, || value(k)), value(k));
    }
    wait_until("Redis stores every value", || {
        entries(&mut r) == KEYS as usize
    });

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, reads, wrong) = (stop.clone(), reads.clone(), wrong.clone());
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                let mut k = t * 37;
                while !stop.load(Relaxed) {
                    k = (k + 1) % KEYS;
                    // This node's copy goes: the read asks Redis.
                    VALUES.invalidate(&k);
                    let start = Instant::now();
                    let got = VALUES.get_or_compute(k, || value(k));
                    slowest = slowest.max(start.elapsed());
                    if got != value(k) {
                        wrong.fetch_add(1, Relaxed);
                    }
                    reads.fetch_add(1, Relaxed);
                }
                slowest
            })
        })
        .collect();
    let shared_hits = || VALUES.stats().shared_hits;
    let read_more = |n: u64| {
        let from = reads.load(Relaxed);
        wait_until("the readers read on", || reads.load(Relaxed) >= from + n);
    };
    read_more(500);
    assert!(shared_hits() > 0, "reads were answered by Redis");

    // Paused past the timeout, with reads on the wire.
    let errors = tier_stats().errors;
    signal(&server.0, "-STOP");
    wait_until("the pause is noticed", || tier_stats().errors > errors);
    read_more(500);
    signal(&server.0, "-CONT");
    let hits = shared_hits();
    wait_until("Redis answers reads again", || shared_hits() > hits + 500);

    stop.store(true, Relaxed);
    let slowest = readers
        .into_iter()
        .map(|t| t.join().expect("no reader panicked"))
        .max()
        .unwrap();
    assert_eq!(wrong.load(Relaxed), 0, "a read answered another key");
    assert!(
        slowest < Duration::from_secs(2),
        "a read waited {slowest:?} with a {TIMEOUT:?} timeout"
    );
    // A reply read by the wrong call would have been taken for a damaged
    // entry and deleted.
    assert_eq!(
        entries(&mut r),
        KEYS as usize,
        "an entry was deleted as unreadable"
    );

    // Many callers at once: each read still answers its key, and the
    // connections stay few (callers past the pool's bound go through the
    // tier's thread instead of opening and closing one per call).
    let hits = shared_hits();
    let most = Arc::new(AtomicU64::new(0));
    let crowd: Vec<_> = (0..48u64)
        .map(|t| {
            let (wrong, most) = (wrong.clone(), most.clone());
            let mut c = client.get_connection().unwrap();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let k = (t * 13 + i) % KEYS;
                    VALUES.invalidate(&k);
                    if VALUES.get_or_compute(k, || value(k)) != value(k) {
                        wrong.fetch_add(1, Relaxed);
                    }
                    if i % 50 == 0 {
                        most.fetch_max(clients(&mut c), Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in crowd {
        t.join().expect("no reader panicked");
    }
    assert_eq!(wrong.load(Relaxed), 0, "a read answered another key");
    assert!(shared_hits() > hits, "the crowd's reads reached Redis");
    // 48 probes of the test's own, this connection, the tier's two, and at
    // most 16 pooled ones.
    let most = most.load(Relaxed);
    assert!(
        most <= 48 + 1 + 2 + 16,
        "{most} clients connected: reads opened a connection each"
    );
}
