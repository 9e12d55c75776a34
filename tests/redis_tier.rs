//! The shared tier against a real Redis (127.0.0.1:6379, or
//! `ULTRACACHE_REDIS_URL`): values shared between nodes, invalidations that
//! reach every node, garbage and type changes read as misses. Each test
//! process uses a key prefix of its own.
//!
//! Without Redis the tests say so loudly and pass; with `CI=true` they fail.

mod common;

use std::process::Command;

use common::shared_tier::{entry_keys, redis, setup, wait_until, CHILD};
use common::Runs;
use serde::{Deserialize, Serialize};
use ultracache::{cached, invalidate, tracks, Cache, Trackable};

#[derive(Clone, Debug, Serialize, Deserialize, Trackable)]
#[trackable(kind = "redis.post")]
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

static PAGE_RUNS: Runs = Runs::new();

#[cached(shared, forever)]
fn shared_page(id: i64) -> String {
    PAGE_RUNS.hit();
    format!("<h1>{}</h1>", load(id).title)
}

fn page_stats() -> ultracache::CacheStats {
    ultracache::stats()
        .cache("shared_page")
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_value_computed_on_one_node_is_a_hit_on_another_and_a_write_there_reaches_this_one() {
    let Some(prefix) = setup() else { return };
    // Node 1 (this process) computes the page; it reaches Redis.
    assert_eq!(shared_page(1), "<h1>post 1</h1>");
    assert_eq!(PAGE_RUNS.get(), 1);
    wait_until("the page is in Redis", || {
        !entry_keys(prefix, "shared_page").is_empty()
    });

    // Node 2 (another process, same prefix) gets it from Redis, then writes post 1.
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "second_node", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .env("ULTRACACHE_REDIS_PREFIX", prefix)
        .status()
        .expect("the second node runs");
    assert!(status.success(), "the second node's checks failed");

    // The write on node 2 dropped the page from Redis and from node 1's L1.
    wait_until("node 1 hears of the write", || page_stats().entries == 0);
    assert!(entry_keys(prefix, "shared_page").is_empty());
    assert_eq!(shared_page(1), "<h1>post 1</h1>");
    assert_eq!(PAGE_RUNS.get(), 2, "computed again after the write");
}

/// The second node of the test above: run by it, in its own process.
#[test]
#[ignore = "run by the two-node test as its second node"]
fn second_node() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    assert!(setup().is_some(), "the second node needs Redis");
    assert_eq!(shared_page(1), "<h1>post 1</h1>");
    assert_eq!(PAGE_RUNS.get(), 0, "node 2 did not compute: Redis had it");
    assert_eq!(page_stats().shared_hits, 1);
    // Writing post 1 here must reach node 1.
    invalidate(&load(1));
    wait_until("node 2's own copy is dropped", || page_stats().entries == 0);
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Card {
    title: String,
    views: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CardV2 {
    views: u32,
    title: String,
    tags: Vec<String>,
}

// Two caches with one name share their Redis entries: two nodes' L1s in one
// process.
static NODE_A: Cache<u32, Card> = Cache::new("cards").forever().shared();
static NODE_B: Cache<u32, Card> = Cache::new("cards").forever().shared();
static OLD_DEPLOY: Cache<u32, Card> = Cache::new("typed-cards").forever().shared();
static NEW_DEPLOY: Cache<u32, CardV2> = Cache::new("typed-cards").forever().shared();

fn card(n: u32) -> Card {
    Card {
        title: format!("card {n}"),
        views: n,
    }
}

#[test]
fn garbage_bytes_are_a_miss_and_are_replaced() {
    let Some(prefix) = setup() else { return };
    NODE_A.get_or_compute(10, || card(10));
    wait_until("the card is in Redis", || {
        entry_keys(prefix, "cards").len() == 1
    });
    let key = entry_keys(prefix, "cards").remove(0);
    let mut con = redis().expect("redis");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(b"\x00garbage\xff")
        .query(&mut con)
        .unwrap();

    let runs = Runs::new();
    let got = NODE_B.get_or_compute(10, || {
        runs.hit();
        card(10)
    });
    assert_eq!(got, card(10));
    assert_eq!(runs.get(), 1, "garbage is a miss: computed");
    wait_until("good bytes replace the garbage", || {
        let bytes: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut con).unwrap_or(None);
        bytes.is_some_and(|b| b.starts_with(b"UC"))
    });
}

#[test]
fn a_changed_type_reads_old_bytes_as_a_miss() {
    let Some(prefix) = setup() else { return };
    OLD_DEPLOY.get_or_compute(20, || card(20));
    wait_until("the card is in Redis", || {
        entry_keys(prefix, "typed-cards").len() == 1
    });
    let runs = Runs::new();
    let v2 = NEW_DEPLOY.get_or_compute(20, || {
        runs.hit();
        CardV2 {
            views: 20,
            title: "card 20".into(),
            tags: vec!["new".into()],
        }
    });
    assert_eq!(
        runs.get(),
        1,
        "the old type's bytes were not decoded as the new type"
    );
    assert_eq!(v2.tags, ["new"]);
}

#[test]
fn a_shared_value_read_on_another_node_keeps_its_dependencies() {
    let Some(prefix) = setup() else { return };
    static WRITER: Cache<u32, String> = Cache::new("titles").forever().shared();
    static READER: Cache<u32, String> = Cache::new("titles").forever().shared();
    WRITER.get_or_compute(30, || load(30).title);
    wait_until("the title is in Redis", || {
        entry_keys(prefix, "titles").len() == 1
    });
    let runs = Runs::new();
    let title = READER.get_or_compute(30, || {
        runs.hit();
        load(30).title
    });
    assert_eq!(title, "post 30");
    assert_eq!(runs.get(), 0, "a hit from Redis");
    assert_eq!(READER.stats().shared_hits, 1);
    // The dependencies came with it: writing post 30 drops the reader's copy.
    invalidate(&load(30));
    assert_eq!(READER.get(&30), None);
}

#[test]
fn redis_refuses_a_value_whose_inputs_were_written_while_it_was_computed() {
    let Some(_) = setup() else { return };
    static SLOW: Cache<u32, String> = Cache::new("slow").forever().shared();
    let refused = ultracache::redis::tier_stats().refused;
    let value = SLOW.get_or_compute(40, || {
        let title = load(40).title;
        // Another node writes post 40 while this value is being computed.
        invalidate(&load(40));
        title
    });
    assert_eq!(value, "post 40");
    wait_until("Redis refuses the stale value", || {
        ultracache::redis::tier_stats().refused > refused
    });
    assert_eq!(SLOW.get(&40), None, "not kept in process either");
}
