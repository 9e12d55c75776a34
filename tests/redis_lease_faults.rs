//! Single flight across nodes when things go wrong:
//! - the node computing dies: another process takes a key's lease and is
//!   killed (`SIGKILL`) while computing; this node, missing the same key,
//!   waits for the lease only as long as the lease lasts (5 s) and then
//!   computes the value itself — it neither hangs nor fails;
//! - a caller waiting for another node's lease is cancelled (its future
//!   dropped by a timeout): nothing is left behind, and the holder's value
//!   reaches the next caller.
//!
//! Uses the Redis the shared-tier tests use; without it the test says so
//! loudly and passes; with `CI=true` it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use common::shared_tier::{setup, CHILD};
use ultracache::Cache;

static PAGES: Cache<u32, String> = Cache::new("lease-killed-pages").forever().shared();

// Two nodes' L1s in one process: caches of one name, each its own.
static HOLDER: Cache<u32, String> = Cache::new("lease-cancel-pages").forever().shared();
static WAITER: Cache<u32, String> = Cache::new("lease-cancel-pages").forever().shared();

#[test]
fn a_caller_cancelled_while_waiting_for_a_lease_leaves_nothing_behind() {
    let Some(_) = setup() else { return };
    let (computing_tx, computing) = std::sync::mpsc::channel();
    let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        HOLDER.get_or_compute(3, || {
            computing_tx.send(()).expect("the test listens");
            finish_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("told to finish");
            "page 3 from the holder".to_owned()
        })
    });
    computing
        .recv_timeout(Duration::from_secs(20))
        .expect("the holder computes under the lease");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let waits_before = ultracache::redis::tier_stats().lease_waits;
    let cancelled = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(200),
            WAITER.get_or_compute_async(3, async { "page 3 from the waiter".to_owned() }),
        )
        .await
    });
    assert!(
        cancelled.is_err(),
        "the waiter was still waiting: {cancelled:?}"
    );
    assert!(ultracache::redis::tier_stats().lease_waits > waits_before);
    finish.send(()).expect("the holder listens");
    assert_eq!(holder.join().expect("the holder"), "page 3 from the holder");
    // The next caller on the waiting node gets the holder's value from Redis.
    let page = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            WAITER.get_or_compute_async(3, async { "page 3 from the waiter".to_owned() }),
        )
        .await
    });
    assert_eq!(page.expect("not stuck").as_str(), "page 3 from the holder");
    assert_eq!(WAITER.stats().shared_hits, 1);
}

#[test]
fn a_lease_whose_holder_died_is_taken_over_when_it_lapses() {
    let Some(prefix) = setup() else { return };
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "lease_holder",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("ULTRACACHE_REDIS_PREFIX", prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the other node starts");
    // Its lines, read on a thread of their own so the wait is bounded.
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the other node took the lease in time");
        if line.trim_end().ends_with("computing under the lease") {
            break;
        }
    }
    // The holder dies mid-computation.
    child.kill().expect("killed");
    let _ = child.wait();

    let runs = AtomicUsize::new(0);
    let waits_before = ultracache::redis::tier_stats().lease_waits;
    let started = Instant::now();
    let page = PAGES.get_or_compute(7, || {
        runs.fetch_add(1, SeqCst);
        "page 7 from this node".to_owned()
    });
    let took = started.elapsed();
    assert_eq!(page, "page 7 from this node");
    assert_eq!(runs.load(SeqCst), 1, "this node computed once");
    assert!(
        ultracache::redis::tier_stats().lease_waits > waits_before,
        "this node waited for the lease first"
    );
    assert!(
        took < Duration::from_secs(15),
        "waited {took:?}: a dead holder's lease must lapse"
    );
}

/// The other node: takes the lease of key 7 and computes until killed.
#[test]
#[ignore = "run by the lease test as the node that dies"]
fn lease_holder() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    setup().expect("the other node needs Redis");
    PAGES.get_or_compute(7, || {
        println!("computing under the lease");
        // Until killed: reads stdin, which the test never closes first.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        "never stored".to_owned()
    });
}
