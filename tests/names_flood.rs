//! Kind names read from outside fill a bounded table; once it is full they
//! must not cost correctness: a cache named after the flood keeps its name,
//! a kind some entry depends on still parses, and an invalidation from
//! another node that names a kind this node cannot keep still refuses what
//! a computation under way read from it — and drops nothing else. Against
//! a redis-server of the test's own.

mod common;

use std::sync::mpsc;
use std::sync::LazyLock;
use std::thread;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::redis_server::{free_port, start_redis, wait_until};
use common::web::{client, fetch, serve};
use common::Runs;
use ultracache::http::CacheLayer;
use ultracache::{cached, dependents, stats, track_dep, Config, Dep, Kind};

/// Kinds of no model: the table of names is their only way in.
const SETTINGS: Kind = Kind::new("flood.settings");
const UNSEEN: Kind = Kind::new("flood.unseen");
/// Longer than any name the table keeps.
static LONG: LazyLock<Kind> =
    LazyLock::new(|| Kind::new(Box::leak(format!("flood.{}", "l".repeat(1_100)).into())));

const READY: Kind = Kind::new("flood.ready");

#[cached(forever)]
fn ready_page() {
    track_dep(Dep::kind(READY));
}

/// Longer than any name the table keeps, and read by no entry.
static UNLISTED: LazyLock<Kind> =
    LazyLock::new(|| Kind::new(Box::leak(format!("flood.{}", "u".repeat(1_100)).into())));

static SETTINGS_RUNS: Runs = Runs::new();
static LONG_RUNS: Runs = Runs::new();
static UNSEEN_RUNS: Runs = Runs::new();

#[cached(forever)]
fn settings_page(n: u64) -> u64 {
    SETTINGS_RUNS.hit();
    track_dep(Dep::kind(SETTINGS));
    n
}

#[cached(forever)]
fn long_page(n: u64) -> u64 {
    LONG_RUNS.hit();
    track_dep(Dep::kind(*LONG));
    n
}

/// The channels a computation of `unseen_page` reports to and waits on.
static GATE: std::sync::Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>> =
    std::sync::Mutex::new(None);

#[cached(forever)]
fn unseen_page(n: u64) -> u64 {
    UNSEEN_RUNS.hit();
    track_dep(Dep::kind(UNSEEN));
    if let Some((read, go)) = GATE.lock().unwrap().take() {
        read.send(()).unwrap();
        go.recv_timeout(Duration::from_secs(20))
            .expect("told to go on");
    }
    n
}

/// Of no model, and read by no entry.
const UNSEEN_OBJECTS: Kind = Kind::new("flood.unseen-objects");

/// Reads an object of `UNSEEN_OBJECTS` (0) or the `UNLISTED` kind (1).
#[cached(forever)]
fn unseen_dep_page(which: u8) -> u8 {
    UNSEEN_RUNS.hit();
    track_dep(match which {
        0 => Dep::object(UNSEEN_OBJECTS, &7i64),
        _ => Dep::kind(*UNLISTED),
    });
    if let Some((read, go)) = GATE.lock().unwrap().take() {
        read.send(()).unwrap();
        go.recv_timeout(Duration::from_secs(20))
            .expect("told to go on");
    }
    which
}

const SENTINEL: Kind = Kind::new("flood.sentinel");

#[cached]
fn sentinel_page() {
    track_dep(Dep::kind(SENTINEL));
}

fn publish(r: &mut redis::Connection, message: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg("{flood}invalidations")
        .arg(message)
        .query(r)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_of_names_costs_no_cache_its_name_and_no_entry_its_invalidation() {
    let port = free_port();
    let Some(mut server) = start_redis(port) else {
        common::redis_server::skip("names flood");
        return;
    };
    Config::new()
        .redis(format!("redis://127.0.0.1:{port}"))
        .redis_prefix("flood")
        .redis_timeout(Duration::from_millis(500))
        .install()
        .expect("configured once");
    let client_redis = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut r = client_redis.get_connection().unwrap();

    // The subscription is up once a message arrives (late copies of this
    // one drop only `ready_page`).
    ready_page();
    wait_until("the subscription is up", || {
        publish(&mut r, "v1\n*flood.ready");
        dependents(&Dep::kind(READY)) == 0
    });

    // Far more distinct kind names than the table keeps.
    for i in 0..5_000 {
        let _ = Dep::parse(&format!("flood.kind{i}:1"));
    }
    assert_eq!(Dep::parse("flood.one-more"), None, "the table is full");

    // A cache named after the flood keeps its name.
    let app = Router::new()
        .route("/page", get(|| async { "page" }))
        .layer(CacheLayer::new(Duration::from_secs(3600)).name("after-the-flood"));
    let base = serve(app).await;
    let web = client();
    fetch(&web, &format!("{base}/page"), &[]).await;
    assert_eq!(fetch(&web, &format!("{base}/page"), &[]).await.0, "HIT");
    assert!(
        stats().cache("after-the-flood").is_some(),
        "the layer's cache is listed under its name: {:?}",
        stats().caches.iter().map(|c| c.name).collect::<Vec<_>>()
    );

    // A kind an entry depends on parses, though the table is full.
    assert_eq!(settings_page(1), 1);
    assert_eq!(Dep::parse("flood.settings"), Some(Dep::kind(SETTINGS)));
    assert_eq!(
        Dep::parse("flood.settings:7"),
        Some(Dep::object(SETTINGS, &7i64))
    );

    // Another node's invalidation of it arrives.
    publish(&mut r, "v1\n*flood.settings");
    wait_until("an invalidation from another node arrives", || {
        dependents(&Dep::kind(SETTINGS)) == 0
    });
    assert_eq!(settings_page(1), 1);
    assert_eq!(SETTINGS_RUNS.get(), 2, "computed again after it");

    // A kind longer than the table keeps reaches the entries that read it.
    assert_eq!(long_page(1), 1);
    assert_eq!(long_page(1), 1);
    assert_eq!(LONG_RUNS.get(), 1);
    publish(&mut r, &format!("v1\n*{}", LONG.name()));
    wait_until("the long kind's entry is dropped", || {
        dependents(&Dep::kind(*LONG)) == 0
    });
    assert_eq!(long_page(1), 1);
    assert_eq!(LONG_RUNS.get(), 2);
    assert_eq!(
        dependents(&Dep::kind(SETTINGS)),
        1,
        "only what the message named was dropped"
    );

    // A computation reads a kind no entry depends on yet and the table
    // cannot keep; another node writes it meanwhile. What it computed is
    // not kept.
    assert_eq!(settings_page(2), 2);
    let (read_tx, read_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    *GATE.lock().unwrap() = Some((read_tx, go_rx));
    let computing = thread::spawn(|| unseen_page(1));
    read_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the computation read its kind");
    assert_eq!(Dep::parse("flood.unseen"), None, "not kept, not in use");
    sentinel_page();
    // One message, applied as one: once the sentinel's entry is gone, the
    // unseen kind was versioned too.
    publish(&mut r, "v1\n*flood.unseen\nflood.sentinel");
    wait_until("the message is applied", || {
        dependents(&Dep::kind(SENTINEL)) == 0
    });
    go_tx.send(()).unwrap();
    assert_eq!(computing.join().unwrap(), 1);
    assert_eq!(unseen_page(1), 1);
    assert_eq!(
        UNSEEN_RUNS.get(),
        2,
        "the value computed across the write was kept"
    );
    assert_eq!(
        dependents(&Dep::kind(SETTINGS)),
        2,
        "entries that read neither were dropped"
    );
    // The same for an object of that kind, and for a kind past the length
    // kept.
    let unlisted = format!("v1\n{}", UNLISTED.name());
    for (which, message) in [(0, "v1\nflood.unseen-objects:7"), (1, unlisted.as_str())] {
        let (read_tx, read_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        *GATE.lock().unwrap() = Some((read_tx, go_rx));
        let before = UNSEEN_RUNS.get();
        let computing = thread::spawn(move || unseen_dep_page(which));
        read_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the computation read its dependency");
        sentinel_page();
        publish(&mut r, &format!("{message}\nflood.sentinel"));
        wait_until("the message is applied", || {
            dependents(&Dep::kind(SENTINEL)) == 0
        });
        go_tx.send(()).unwrap();
        assert_eq!(computing.join().unwrap(), which);
        assert_eq!(unseen_dep_page(which), which);
        assert_eq!(
            UNSEEN_RUNS.get(),
            before + 2,
            "{which}: the value computed across the write was kept"
        );
    }

    let _ = server.kill();
    let _ = server.wait();
}
