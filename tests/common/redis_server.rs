//! A redis-server of the test's own, on a free loopback port, keeping
//! nothing on disk: for the tests that stop, pause, restart or damage it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts redis-server on `port` and waits until it accepts connections.
pub fn start_redis(port: u16) -> Option<Child> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child)
}

/// Sends `sig` (`-STOP`, `-CONT`…) to the redis-server `redis`.
pub fn signal(redis: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &redis.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig}");
}

/// Says loudly that the test cannot run without redis-server; in CI
/// (`CI=true`) that fails the test.
pub fn skip(test: &str) {
    let message = format!("redis-server cannot be started: the {test} test cannot run");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: a skipped test is a failed test)");
    }
    eprintln!("\n*** SKIPPED: {message} ***\n");
}

/// Waits (bounded: a failure must not hang) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A redis-server stopped when dropped (the test passed or failed).
pub struct Stopped(pub Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Clients connected to the server now.
pub fn clients(r: &mut redis::Connection) -> u64 {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(r).unwrap();
    list.lines().count() as u64
}
