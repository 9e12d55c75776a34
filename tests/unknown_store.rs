//! A cache naming a store that was never configured: a clear error, not a
//! panic, and never a wrong value.

mod common;

use common::Runs;
use ultracache::{cached, Config, ConfigError};

static RUNS: Runs = Runs::new();

#[cached(timeout = 60, store = "nope")]
fn misconfigured(n: u32) -> u32 {
    RUNS.hit();
    n + 1
}

// One test: installing must come before any cached call in the process.
#[test]
fn a_missing_store_is_refused_at_install_and_bypassed_at_call() {
    let err = Config::new().install().unwrap_err();
    assert_eq!(
        err,
        ConfigError::UnknownStore {
            cache: "unknown_store::misconfigured".into(),
            store: "nope".into(),
        }
    );
    let message = err.to_string();
    assert!(message.contains(r#"add `.store("nope", StoreConfig::new())`"#));

    // Without the store, calls compute every time instead of panicking.
    assert_eq!(misconfigured(1), 2);
    assert_eq!(misconfigured(1), 2);
    assert_eq!(RUNS.get(), 2);
}
