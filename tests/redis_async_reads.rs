//! Async callers read the shared tier on their own runtime (a multiplexed
//! connection per thread, no hop to the tier's thread). Tried the hard way:
//! runtimes that end while their connection is held, a runtime of several
//! workers reading at once, many threads each with a runtime of its own,
//! and a server paused past the timeout and resumed with reads on the wire.
//! Every read answers its own key, no call waits past the bound, a runtime
//! that ended costs no failure, and the connections stay few. Against a
//! redis-server of the test's own.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::{clients, free_port, signal, start_redis, wait_until, Stopped};
use ultracache::redis::tier_stats;
use ultracache::{Cache, Config};

static VALUES: Cache<u64, String> = Cache::new("async-direct").forever().shared();

const KEYS: u64 = 200;
const TIMEOUT: Duration = Duration::from_millis(100);

fn value(k: u64) -> String {
    format!("value of key {k}")
}

fn entries(r: &mut redis::Connection) -> usize {
    redis::cmd("KEYS")
        .arg("{async-reads}e:async-direct:*")
        .query::<Vec<String>>(r)
        .unwrap()
        .len()
}

/// Drops this node's copy of `k` and reads it again from an async caller:
/// answered by Redis, or computed when Redis cannot answer.
async fn read(k: u64) -> String {
    VALUES.invalidate(&k);
    VALUES
        .get_or_compute_async(k, async move {
            COMPUTED.fetch_add(1, Relaxed);
            value(k)
        })
        .await
}

/// Reads that were computed (Redis did not answer them).
static COMPUTED: AtomicU64 = AtomicU64::new(0);

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn async_reads_answer_their_own_key_across_runtimes_and_a_pause() {
    let port = free_port();
    let Some(server) = start_redis(port) else {
        common::redis_server::skip("async direct reads");
        return;
    };
    let server = Stopped(server);
    Config::new()
        .redis(format!("redis://127.0.0.1:{port}"))
        .redis_prefix("async-reads")
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
    let shared_hits = || VALUES.stats().shared_hits;
    let computed = || COMPUTED.load(Relaxed);

    // Runtimes one after another on this thread: each ends while this
    // thread holds the connection its reads made; the next runtime's reads
    // are still answered by Redis, and no failure is counted.
    let errors = tier_stats().errors;
    let before = computed();
    for round in 0..3u64 {
        let hits = shared_hits();
        current_thread().block_on(async {
            for k in 0..KEYS {
                assert_eq!(read(k).await, value(k), "round {round}");
            }
        });
        assert_eq!(
            shared_hits() - hits,
            KEYS,
            "round {round}: every read was answered by Redis"
        );
    }
    assert_eq!(computed(), before, "a read computed while Redis was up");
    assert_eq!(
        tier_stats().errors,
        errors,
        "an ended runtime's connection counted as a Redis failure"
    );

    // A runtime of four workers, 32 tasks reading at once; then many
    // threads, each with a runtime of its own.
    let wrong = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..32u64)
            .map(|t| {
                let wrong = wrong.clone();
                tokio::spawn(async move {
                    for i in 0..100 {
                        let k = (t * 7 + i) % KEYS;
                        if read(k).await != value(k) {
                            wrong.fetch_add(1, Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("no task panicked");
        }
    });
    let most = Arc::new(AtomicU64::new(0));
    let crowd: Vec<_> = (0..24u64)
        .map(|t| {
            let (wrong, most) = (wrong.clone(), most.clone());
            let mut c = client.get_connection().unwrap();
            std::thread::spawn(move || {
                current_thread().block_on(async {
                    for i in 0..100 {
                        let k = (t * 13 + i) % KEYS;
                        if read(k).await != value(k) {
                            wrong.fetch_add(1, Relaxed);
                        }
                        if i % 25 == 0 {
                            most.fetch_max(clients(&mut c), Relaxed);
                        }
                    }
                })
            })
        })
        .collect();
    for t in crowd {
        t.join().expect("no reader panicked");
    }
    assert_eq!(wrong.load(Relaxed), 0, "a read answered another key");
    // 24 probes of the test's own, this connection, the tier's two, the
    // four workers' and at most 16 more of the readers' threads.
    let most = most.load(Relaxed);
    assert!(
        most <= 24 + 1 + 2 + 4 + 16,
        "{most} clients connected: reads opened a connection each"
    );

    // A runtime without its IO driver (timers only) cannot open a socket of
    // its own: its reads go through the tier's thread, answered by Redis.
    let hits = shared_hits();
    std::thread::spawn(|| {
        let no_io = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        no_io.block_on(async {
            for k in 0..KEYS {
                assert_eq!(read(k).await, value(k));
            }
        });
    })
    .join()
    .expect("reads on a runtime without IO");
    assert_eq!(shared_hits() - hits, KEYS, "answered by Redis");

    // Paused past the timeout with reads on the wire, on the four workers.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4u64)
        .map(|t| {
            let (stop, reads, wrong) = (stop.clone(), reads.clone(), wrong.clone());
            rt.spawn(async move {
                let mut slowest = Duration::ZERO;
                let mut k = t * 37;
                while !stop.load(Relaxed) {
                    k = (k + 1) % KEYS;
                    let start = Instant::now();
                    let got = read(k).await;
                    slowest = slowest.max(start.elapsed());
                    if got != value(k) {
                        wrong.fetch_add(1, Relaxed);
                    }
                    reads.fetch_add(1, Relaxed);
                    tokio::task::yield_now().await;
                }
                slowest
            })
        })
        .collect();
    let read_more = |n: u64| {
        let from = reads.load(Relaxed);
        wait_until("the readers read on", || reads.load(Relaxed) >= from + n);
    };
    read_more(200);
    let errors = tier_stats().errors;
    signal(&server.0, "-STOP");
    wait_until("the pause is noticed", || tier_stats().errors > errors);
    read_more(200);
    signal(&server.0, "-CONT");
    let hits = shared_hits();
    wait_until("Redis answers reads again", || shared_hits() > hits + 200);
    stop.store(true, Relaxed);
    let slowest = rt.block_on(async {
        let mut slowest = Duration::ZERO;
        for r in readers {
            slowest = slowest.max(r.await.expect("no reader panicked"));
        }
        slowest
    });
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
}
