//! The shared tier against the Redis the tests use (127.0.0.1:6379, or
//! `ULTRACACHE_REDIS_URL`), with a key prefix per test process.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ultracache::Config;

/// Set in a test binary re-run as a second node.
pub const CHILD: &str = "ULTRACACHE_TEST_CHILD";

pub fn redis_url() -> String {
    std::env::var("ULTRACACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn redis() -> Option<redis::Connection> {
    let client = redis::Client::open(redis_url()).ok()?;
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()
}

/// Installs the shared tier with this process's prefix (the child process of
/// the two-node test reuses its parent's). `None`: no Redis here.
pub fn setup() -> Option<&'static str> {
    static PREFIX: OnceLock<Option<String>> = OnceLock::new();
    PREFIX
        .get_or_init(|| {
            if redis().is_none() {
                let message = format!(
                    "no Redis at {}: the shared-tier tests cannot run",
                    redis_url()
                );
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{message} (CI=true: a skipped test is a failed test)");
                }
                eprintln!("\n*** SKIPPED: {message} ***\n");
                return None;
            }
            let prefix = std::env::var("ULTRACACHE_REDIS_PREFIX").unwrap_or_else(|_| {
                format!(
                    "test-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                )
            });
            Config::new()
                .redis(redis_url())
                .redis_prefix(prefix.clone())
                .install()
                .expect("the shared tier is configured once");
            Some(prefix)
        })
        .as_deref()
}

/// Waits (bounded) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn entry_keys(prefix: &str, cache: &str) -> Vec<String> {
    let mut con = redis().expect("redis");
    let pattern = format!("{{{prefix}}}e:{cache}:*");
    redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut con)
        .unwrap_or_default()
}
