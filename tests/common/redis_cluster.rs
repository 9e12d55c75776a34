//! A Redis Cluster of the test's own: three primaries on free loopback
//! ports, keeping nothing on disk, stopped when dropped. Slots can be moved
//! between primaries as an operator's resharding does.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis_server::free_port;

pub struct Cluster {
    /// Every node's port (primaries and replicas), killed ones included.
    pub ports: Vec<u16>,
    children: Vec<Child>,
    killed: Vec<u16>,
    dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connection(port: u16) -> redis::Connection {
    try_connection(port).expect("a cluster node answers")
}

fn try_connection(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .ok()
}

impl Cluster {
    /// Starts three primaries and joins them (`None`: redis-server or
    /// redis-cli is missing, or the cluster did not form).
    pub fn start() -> Option<Cluster> {
        Cluster::start_with(0)
    }

    /// Starts three primaries with `replicas` replicas each.
    pub fn start_with(replicas: usize) -> Option<Cluster> {
        let dir = std::env::temp_dir().join(format!(
            "ultracache-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let mut cluster = Cluster {
            ports: Vec::new(),
            children: Vec::new(),
            killed: Vec::new(),
            dir,
        };
        for _ in 0..3 * (1 + replicas) {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                // Each node's snapshot file of its own: a primary writes one
                // to sync a replica, and nodes share the directory (with one
                // file name, a replica could load another primary's data).
                .args(["--dbfilename", &format!("dump-{port}.rdb")])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in &cluster.ports {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !created.success() {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &cluster.ports {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connection(port))
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(cluster)
    }

    pub fn url(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// The primary that serves `key` now (the one that answers it without
    /// a redirect).
    pub fn owner(&self, key: &str) -> u16 {
        self.try_owner(key).expect("some primary serves every slot")
    }

    /// The live primary that serves `key`, if any does (during a failover,
    /// none may).
    pub fn try_owner(&self, key: &str) -> Option<u16> {
        self.live().find(|&p| {
            try_connection(p)
                .is_some_and(|mut c| redis::cmd("EXISTS").arg(key).query::<i64>(&mut c).is_ok())
        })
    }

    /// The ports of the nodes not killed.
    pub fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .copied()
            .filter(|p| !self.killed.contains(p))
    }

    /// Waits until `key`'s writes reached a replica (so a failover keeps
    /// them): a write in its slot, then `WAIT` for it on the same connection
    /// (a replica that has it has everything written before).
    pub fn replicate(&self, key: &str) {
        let mut c = connection(self.owner(key));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let _: () = redis::cmd("SET")
                .arg(format!("{key}:replicated"))
                .arg(1)
                .query(&mut c)
                .expect("SET");
            let acked: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(1000)
                .query(&mut c)
                .expect("WAIT");
            if acked >= 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no replica acknowledged the writes"
            );
        }
    }

    /// Kills the node on `port` (as a crash would).
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port).expect("a node");
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        self.killed.push(port);
    }

    /// A primary that does not serve `key` (it answers with `MOVED`).
    pub fn not_owner(&self, key: &str) -> u16 {
        let owner = self.owner(key);
        *self
            .ports
            .iter()
            .find(|&&p| p != owner)
            .expect("three primaries")
    }

    /// The keys matching `pattern` on the primary that serves `key` (what
    /// every client reads; replicas may lag behind it).
    pub fn keys_on_owner_of(&self, key: &str, pattern: &str) -> Vec<String> {
        let Some(owner) = self.try_owner(key) else {
            return Vec::new();
        };
        let Some(mut c) = try_connection(owner) else {
            return Vec::new();
        };
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut c)
            .unwrap_or_default()
    }

    /// `key` read from the primary that serves it.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut connection(self.owner(key)))
            .expect("GET on the owner")
    }

    /// The keys matching `pattern` on the live nodes (a key on a primary
    /// and its replicas counted once).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all = std::collections::BTreeSet::new();
        for p in self.live() {
            let Some(mut c) = try_connection(p) else {
                continue;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query(&mut c)
                .unwrap_or_default();
            all.extend(keys);
        }
        all.into_iter().collect()
    }

    /// Moves the slot of `key` (with its keys) from its primary to `to`, as
    /// resharding does: importing/migrating, `MIGRATE` of each key, then the
    /// new owner announced to every primary.
    pub fn move_slot_of(&self, key: &str, to: u16) {
        let from = self.owner(key);
        assert_ne!(from, to, "the slot is on another primary");
        let id = |p: u16| -> String {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut connection(p))
                .expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from), id(to));
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connection(from))
            .expect("CLUSTER KEYSLOT");
        let setslot = |p: u16, args: &[&str]| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(args)
                .query(&mut connection(p))
                .expect("CLUSTER SETSLOT");
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut connection(from))
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut connection(from))
                .expect("MIGRATE");
        }
        for &p in &self.ports {
            setslot(p, &["NODE", &to_id]);
        }
        assert_eq!(self.owner(key), to, "the slot moved");
    }
}
