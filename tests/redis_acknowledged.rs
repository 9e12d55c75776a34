//! Acknowledged invalidation across nodes (`ultracache::redis::
//! invalidate_acknowledged`): when it returns `Ok`, no other live node still
//! serves a copy it dropped — checked at once, with no wait, in another
//! process, round after round; a node that stopped answering is reported,
//! not waited for past the bound.
//!
//! Uses the Redis the shared-tier tests use; without it the tests say so
//! loudly and pass; with `CI=true` they fail.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::shared_tier::{redis, setup, wait_until, CHILD};
use serde::{Deserialize, Serialize};
use ultracache::redis::{invalidate_acknowledged, invalidate_acknowledged_async, NotAcknowledged};
use ultracache::{tracks, Cache, Trackable};

#[derive(Clone, Debug, Serialize, Deserialize, Trackable)]
#[trackable(kind = "ack.post")]
struct Post {
    id: i64,
    title: String,
}

#[tracks]
fn load(id: i64) -> Post {
    Post {
        id,
        title: format!("post {id}"),
    }
}

static PAGES: Cache<i64, String> = Cache::new("ack-pages").forever().shared();

fn live_nodes(prefix: &str) -> usize {
    let mut r = redis().expect("redis");
    redis::cmd("ZCARD")
        .arg(format!("{{{prefix}}}nodes"))
        .query(&mut r)
        .unwrap_or(0)
}

#[test]
fn after_an_acknowledged_invalidation_returns_no_other_node_serves_its_copy() {
    let Some(prefix) = setup() else { return };
    // This node says it is live once subscribed.
    wait_until("this node is live", || live_nodes(prefix) >= 1);
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "second_node",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("ULTRACACHE_REDIS_PREFIX", prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the second node starts");
    let mut to_child = child.stdin.take().expect("stdin");
    // The second node's lines, read on a thread of their own so that every
    // wait for one is bounded.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let from_child = BufReader::new(child.stdout.take().expect("stdout"));
    std::thread::spawn(move || {
        for line in from_child.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let expect = |want: &str| loop {
        let got = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the second node did not say {want:?} in time"));
        assert!(
            !got.contains("STALE"),
            "the second node still served its copy: {got}"
        );
        // The test harness prints around the node's own lines.
        if got.trim_end().ends_with(want) {
            return;
        }
    };
    expect("live");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    wait_until("both nodes are live", || live_nodes(prefix) >= 2);
    for round in 1..=25 {
        writeln!(to_child, "hold {round}").unwrap();
        expect(&format!("holding {round}"));
        // Odd rounds wait on the calling thread, even ones in a future.
        let acked = if round % 2 == 1 {
            invalidate_acknowledged(&load(round), Duration::from_secs(5))
        } else {
            runtime.block_on(invalidate_acknowledged_async(
                &load(round),
                Duration::from_secs(5),
            ))
        };
        assert_eq!(acked, Ok(1), "round {round}: the other node acknowledged");
        writeln!(to_child, "check {round}").unwrap();
        expect(&format!("dropped {round}"));
    }
    writeln!(to_child, "exit").unwrap();
    let status = child.wait().expect("the second node ends");
    assert!(status.success(), "the second node's checks failed");

    // Run here, not as a test of its own: a silent node would be waited for
    // by the rounds above.
    a_node_that_stopped_answering_is_reported_and_not_waited_for_past_the_bound(prefix);
}

/// The second node of the test above: holds a copy when told, and says
/// whether it still has it when asked (at once: no waiting).
#[test]
#[ignore = "run by the acknowledged-invalidation test as its second node"]
fn second_node() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let prefix = setup().expect("the second node needs Redis");
    wait_until("the second node is live", || live_nodes(prefix) >= 2);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    writeln!(out, "live").unwrap();
    out.flush().unwrap();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        let (verb, n) = (
            words.next(),
            words.next().and_then(|n| n.parse::<i64>().ok()),
        );
        match (verb, n) {
            (Some("hold"), Some(n)) => {
                PAGES.get_or_compute(n, || load(n).title);
                assert!(PAGES.get(&n).is_some());
                writeln!(out, "holding {n}").unwrap();
            }
            (Some("check"), Some(n)) => match PAGES.get(&n) {
                None => writeln!(out, "dropped {n}").unwrap(),
                Some(v) => writeln!(out, "STALE {n} {v}").unwrap(),
            },
            _ => break,
        }
        out.flush().unwrap();
    }
}

fn a_node_that_stopped_answering_is_reported_and_not_waited_for_past_the_bound(prefix: &str) {
    let mut r = redis().expect("redis");
    // A node that said it was live a moment ago and then went silent (a
    // paused process): it never acknowledges.
    let now: (u64, u64) = redis::cmd("TIME").query(&mut r).unwrap();
    let ms = now.0 * 1000 + now.1 / 1000;
    let _: () = redis::cmd("ZADD")
        .arg(format!("{{{prefix}}}nodes"))
        .arg(ms)
        .arg("silent-node")
        .query(&mut r)
        .unwrap();
    PAGES.get_or_compute(1000, || load(1000).title);
    let started = Instant::now();
    let acked = invalidate_acknowledged(&load(1000), Duration::from_millis(300));
    let took = started.elapsed();
    match acked {
        Err(NotAcknowledged::Missing { missing, .. }) => assert!(missing >= 1),
        other => panic!("the silent node was reported missing, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(5),
        "the wait is bounded by what the caller gave (took {took:?})"
    );
    // What this process and Redis held is dropped all the same.
    assert_eq!(PAGES.get(&1000), None);
    let _: () = redis::cmd("ZREM")
        .arg(format!("{{{prefix}}}nodes"))
        .arg("silent-node")
        .query(&mut r)
        .unwrap();
}
