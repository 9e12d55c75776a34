//! Named stores from the configuration, installed once at start.

use std::sync::Once;

use ultracache::{cached, stats, Config, ConfigError, StoreConfig};

fn setup() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        Config::new()
            .store(
                "sessions",
                StoreConfig::new().max_entries(10).no_default_timeout(),
            )
            .store("pages", StoreConfig::new().max_bytes(1 << 20))
            .store("scratch", StoreConfig::new())
            .install()
            .expect("first install succeeds");
    });
}

#[cached(store = "sessions")]
fn session(id: u32) -> String {
    format!("session {id}")
}

#[cached(timeout = 60, store = "pages")]
fn page(id: u32) -> String {
    "x".repeat(id as usize)
}

#[test]
fn functions_use_their_named_store() {
    setup();
    session(1);
    page(3);
    let s = stats();
    assert_eq!(s.cache("session").unwrap().store, "sessions");
    assert_eq!(s.cache("page").unwrap().store, "pages");
}

#[test]
fn a_store_bounded_in_entries_evicts() {
    setup();
    for id in 100..200 {
        session(id);
    }
    ultracache::run_pending_tasks();
    assert!(stats().cache("session").unwrap().entries <= 11);
}

#[test]
fn a_store_bounded_in_bytes_counts_value_sizes() {
    setup();
    // 64 values of 64 KiB each cannot fit in 1 MiB.
    for id in 0..64u32 {
        page(65_536 + id);
    }
    ultracache::run_pending_tasks();
    let entries = stats().cache("page").unwrap().entries;
    assert!(
        entries <= 16,
        "{entries} entries of 64 KiB in a 1 MiB store"
    );
}

#[test]
fn the_configuration_is_installed_once() {
    setup();
    assert_eq!(Config::new().install(), Err(ConfigError::AlreadyInstalled));
}

#[test]
fn clear_store_refuses_computations_in_flight() {
    setup();
    static SCRATCH: ultracache::Cache<u32, &str> =
        ultracache::Cache::new("scratch-in-flight").store("scratch");
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let bound = std::time::Duration::from_secs(30);
    let computing = std::thread::spawn(move || {
        SCRATCH.get_or_compute(1, move || {
            started_tx.send(()).unwrap();
            gate.recv_timeout(bound).unwrap();
            "old"
        })
    });
    started.recv_timeout(bound).unwrap();
    assert!(ultracache::clear_store("scratch"));
    release.send(()).unwrap();
    assert_eq!(computing.join().unwrap(), "old");
    assert_eq!(
        SCRATCH.get(&1),
        None,
        "computed before the clear: not stored"
    );
    assert_eq!(SCRATCH.get_or_compute(1, || "new"), "new");
    assert_eq!(SCRATCH.get(&1), Some("new"));
}
