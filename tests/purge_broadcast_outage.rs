//! Purges broadcast over RabbitMQ while the broker restarts: a write made
//! while it is down is held (visible in the stats as waiting), published
//! when it is back, and purges the proxy — nothing silently lost. Against a
//! RabbitMQ node of the test's own (free ports, its own data directory, so
//! its durable queues survive the restart) and a real Varnish.
//!
//! Needs rabbitmq-server and varnishd with vmod xkey; without them the test
//! says so loudly and passes; with `CI=true` it fails.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::http::HeaderName;
use axum::routing::get;
use axum::Router;
use common::proxies::{skip, start_varnish};
use common::redis_server::free_port;
use ultracache::http::CacheLayer;
use ultracache::purge::{self, PurgeOptions, RabbitBroadcast, VarnishMode, VarnishPurger};
use ultracache::{invalidate, tracks, Trackable};

/// A RabbitMQ node of the test's own.
struct Rabbit {
    node: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    server: Option<Child>,
}

impl Rabbit {
    fn new() -> Rabbit {
        let dir = std::env::temp_dir().join(format!("ultracache-rabbit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("log")).expect("a scratch directory");
        std::fs::create_dir_all(dir.join("mnesia")).expect("a scratch directory");
        std::fs::write(dir.join("enabled_plugins"), "[].").expect("a plugins file");
        // Started by root, the broker runs as its own user: it must write here.
        use std::os::unix::fs::PermissionsExt;
        for path in [dir.clone(), dir.join("log"), dir.join("mnesia")] {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777));
        }
        Rabbit {
            node: format!("ultracache{}@localhost", std::process::id()),
            port: free_port(),
            dist_port: free_port(),
            dir,
            server: None,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node and waits (bounded) until it takes connections.
    fn start(&mut self) -> bool {
        let server = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .env("ERL_CRASH_DUMP", self.dir.join("erl_crash.dump"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(server) = server else { return false };
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let ready = Command::new("rabbitmqctl")
                .args(["-n", &self.node, "await_startup", "--timeout", "5"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.server.as_mut().map(Child::try_wait) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    /// Shuts the node down and waits until it is gone.
    fn stop(&mut self) {
        let ok = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "shutdown", "--timeout", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if let Some(mut server) = self.server.take() {
            if !ok {
                let _ = server.kill();
            }
            let _ = server.wait();
        }
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "outage.post")]
struct Post {
    id: i64,
}

#[tracks]
fn load(id: i64) -> Post {
    Post { id }
}

async fn proxy_cache(client: &reqwest::Client, url: &str) -> String {
    let r = client.get(url).send().await.expect("request");
    r.headers()
        .get("x-proxy-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_made_while_the_broker_restarts_is_held_and_lands_when_it_is_back() {
    let mut rabbit = Rabbit::new();
    if !rabbit.start() {
        return skip("a RabbitMQ node of the test's own could not be started");
    }
    let app = Router::new()
        .route(
            "/outage/posts/{id}",
            get(|UrlPath(id): UrlPath<i64>| async move { format!("post {}", load(id).id) }),
        )
        .layer(
            CacheLayer::new(Duration::from_secs(3600))
                .shared_max_age(Duration::from_secs(3600))
                .surrogate_keys(HeaderName::from_static("xkey")),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let Some((_varnish, port)) = start_varnish(app_port, "outage") else {
        return skip("varnishd with vmod xkey is not available");
    };
    purge::install(
        vec![Arc::new(VarnishPurger::new(
            format!("http://127.0.0.1:{port}"),
            VarnishMode::Xkey,
        ))],
        PurgeOptions::default()
            .broadcast(Arc::new(RabbitBroadcast::new(
                rabbit.url(),
                "ultracache-outage",
                "node-1",
            )))
            .hold(Duration::from_secs(120)),
    )
    .expect("installed once");

    // The subscription is up once this node receives its own purge (a
    // purge published before its queue is bound reaches nobody: probe
    // again until one is heard).
    let deadline = Instant::now() + Duration::from_secs(60);
    'probe: while purge::stats().received < 1 {
        assert!(
            Instant::now() < deadline,
            "this node never heard its own purge"
        );
        invalidate(&load(99));
        let heard = Instant::now() + Duration::from_millis(500);
        while Instant::now() < heard {
            if purge::stats().received >= 1 {
                break 'probe;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/outage/posts/1");
    assert_eq!(proxy_cache(&client, &url).await, "MISS");
    assert_eq!(proxy_cache(&client, &url).await, "HIT");

    // The broker goes down; a write is made meanwhile.
    rabbit.stop();
    invalidate(&load(1));
    until("the purge is held", 30, || {
        purge::stats().unpublished_waiting == 1
    })
    .await;
    assert_eq!(
        proxy_cache(&client, &url).await,
        "HIT",
        "nothing purged the proxy yet"
    );

    // Back up: the held purge is published and reaches the proxy.
    assert!(rabbit.start(), "the RabbitMQ node starts again");
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy_cache(&client, &url).await != "MISS" {
        assert!(
            Instant::now() < deadline,
            "the purge made during the outage never reached the proxy: {:?}",
            purge::stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = purge::stats();
    assert_eq!(stats.unpublished, 0, "nothing was dropped: {stats:?}");
    assert_eq!(stats.unpublished_waiting, 0);
    assert!(stats.published >= 2, "{stats:?}");
}
