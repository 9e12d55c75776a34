//! Memory is bounded: a flood of distinct keys leaves at most the configured
//! number of entries, and the registry shrinks with the evictions.

use ultracache::{cached, run_pending_tasks, stats, tracks, Config, StoreConfig, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "bounded.row")]
struct Row {
    id: u64,
}

#[tracks]
fn row(id: u64) -> Row {
    Row { id }
}

#[cached(forever)]
fn render(id: u64) -> String {
    format!("row {}", row(id).id)
}

const CAPACITY: u64 = 1_000;
const KEYS: u64 = 100_000;

#[test]
fn a_flood_of_keys_stays_within_capacity_and_the_registry_follows() {
    Config::new()
        .default_store(StoreConfig::new().max_entries(CAPACITY))
        .install()
        .unwrap();

    for id in 0..KEYS {
        assert_eq!(render(id), format!("row {id}"));
    }
    run_pending_tasks();

    let s = stats();
    let render = s.cache("render").unwrap();
    // The store's bound is approximate per shard; after maintenance it holds.
    assert!(
        render.entries <= CAPACITY + CAPACITY / 10,
        "entries: {}",
        render.entries
    );
    assert!(render.evictions >= KEYS - CAPACITY - CAPACITY / 10);
    // One dependency per entry: the registry holds no more than the entries.
    assert!(
        s.dependency_links as u64 <= render.entries,
        "links {} > entries {}",
        s.dependency_links,
        render.entries
    );
    assert!(s.dependencies as u64 <= render.entries);
}
