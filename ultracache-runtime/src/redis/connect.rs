//! Where the tier's Redis is and how it is reached: one server (or a
//! Valkey server) by URL, or a Redis Cluster / Valkey cluster by its seed
//! nodes. A cluster connection follows `MOVED`/`ASK` redirects and topology
//! changes; every key of a prefix shares one hash tag, so each script runs on
//! the one primary that owns the prefix's slot.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where the shared tier's Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// One server: `redis://host:port/db`.
    Url(String),
    /// A cluster, by some of its nodes (`redis://host:port` each).
    Cluster(Vec<String>),
}

/// The clients for a [`Target`].
#[derive(Clone)]
pub(crate) enum Backend {
    Single(redis::Client),
    Cluster {
        client: Box<ClusterClient>,
        /// One client per seed node, for the subscription: a message
        /// published on any node of a cluster reaches subscribers on all.
        nodes: Vec<redis::Client>,
        /// The seed nodes and the tier's timeout, for the sharded
        /// subscription's own connection (see [`Backend::shard_subscriber`]).
        urls: Vec<String>,
        timeout: Duration,
    },
}

impl Backend {
    pub(crate) fn open(target: &Target, timeout: Duration) -> Result<Backend, String> {
        match target {
            Target::Url(url) => redis::Client::open(url.as_str())
                .map(Backend::Single)
                .map_err(|e| format!("Redis URL {url:?}: {e}")),
            Target::Cluster(urls) => {
                if urls.is_empty() {
                    return Err("a Redis cluster needs at least one node".into());
                }
                let nodes = urls
                    .iter()
                    .map(|u| {
                        redis::Client::open(u.as_str())
                            .map_err(|e| format!("Redis cluster node {u:?}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                // Each call is bounded by the tier's timeout; redirects are
                // followed within it, and a down node is not retried at length.
                let client = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(5)
                    .max_retry_wait(50)
                    .build()
                    .map_err(|e| format!("Redis cluster {urls:?}: {e}"))?;
                Ok(Backend::Cluster {
                    client: Box::new(client),
                    nodes,
                    urls: urls.clone(),
                    timeout,
                })
            }
        }
    }

    /// A command connection (multiplexed: clones share it).
    pub(crate) async fn connect(&self) -> RedisResult<Connection> {
        match self {
            Backend::Single(client) => client
                .get_multiplexed_async_connection()
                .await
                .map(Connection::Single),
            Backend::Cluster { client, .. } => {
                client.get_async_connection().await.map(Connection::Cluster)
            }
        }
    }

    /// Whether this is a cluster: there, the sharded layout publishes its
    /// invalidations with `SPUBLISH` (sharded pub/sub, Redis 7): a message
    /// travels to the channel's shard only, not over the whole cluster bus.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster { .. })
    }

    /// A RESP3 connection to the cluster whose pushes (sharded messages,
    /// subscription changes, disconnections) go to `pushes`; `None` for one
    /// server. The caller subscribes with `SSUBSCRIBE` on it; the library
    /// finds the node that serves the channel's slot.
    pub(crate) async fn shard_subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> RedisResult<Option<ClusterConnection>> {
        let Backend::Cluster { urls, timeout, .. } = self else {
            return Ok(None);
        };
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .connection_timeout(*timeout)
            .response_timeout(*timeout)
            .retries(2)
            .min_retry_wait(5)
            .max_retry_wait(50)
            .build()?;
        client.get_async_connection().await.map(Some)
    }

    /// The client to subscribe through on the `attempt`th try (a cluster's
    /// seed nodes in turn, so that one down node is not tried forever).
    pub(crate) fn subscriber(&self, attempt: usize) -> &redis::Client {
        match self {
            Backend::Single(client) => client,
            Backend::Cluster { nodes, .. } => &nodes[attempt % nodes.len()],
        }
    }
}

/// A command connection to one server or to a cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Runs `cmd` (a keyless command such as `SCAN`) on the primary that
    /// holds `key`'s slot.
    pub(crate) async fn on_node_of(&mut self, key: &str, cmd: Cmd) -> RedisResult<Value> {
        match self {
            Connection::Single(c) => cmd.query_async(c).await,
            Connection::Cluster(c) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await
            }
        }
    }
}

impl Connection {
    /// Publishes the sharded layout's `message` on `channel`: with
    /// `SPUBLISH` on a cluster (to the channel's shard, where every node
    /// subscribes with `SSUBSCRIBE`), with `PUBLISH` on one server.
    pub(crate) async fn publish_sharded(
        &mut self,
        channel: &str,
        message: &str,
    ) -> RedisResult<()> {
        let verb = match self {
            Connection::Single(_) => "PUBLISH",
            Connection::Cluster(_) => "SPUBLISH",
        };
        let _: i64 = redis::cmd(verb)
            .arg(channel)
            .arg(message)
            .query_async(self)
            .await?;
        Ok(())
    }

    /// Every key matching `pattern`, on every primary (of one server: all
    /// its keys).
    pub(crate) async fn scan_primaries(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        // One slot per primary routes a SCAN to it (`None`: the one server).
        let slots: Vec<Option<u16>> = match self {
            Connection::Single(_) => vec![None],
            Connection::Cluster(c) => {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("SLOTS");
                let reply = c
                    .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                    .await?;
                let ranges: Vec<Vec<Value>> = redis::from_redis_value(reply)?;
                let mut primaries: Vec<(String, i64)> = Vec::new();
                let mut slots = Vec::new();
                for range in ranges {
                    let [start, _end, primary, ..] = range.as_slice() else {
                        continue;
                    };
                    let start: u16 = redis::from_redis_value(start.clone())?;
                    let primary: Vec<Value> = redis::from_redis_value(primary.clone())?;
                    let [host, port, ..] = primary.as_slice() else {
                        continue;
                    };
                    let at: (String, i64) = (
                        redis::from_redis_value(host.clone())?,
                        redis::from_redis_value(port.clone())?,
                    );
                    if !primaries.contains(&at) {
                        primaries.push(at);
                        slots.push(Some(start));
                    }
                }
                slots
            }
        };
        let mut keys = Vec::new();
        for slot in slots {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let page = match (&mut *self, slot) {
                    (Connection::Cluster(c), Some(slot)) => {
                        let route = Route::new(slot, SlotAddr::Master);
                        c.route_command(
                            scan,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                        )
                        .await?
                    }
                    (c, _) => scan.query_async(c).await?,
                };
                let (next, found): (u64, Vec<String>) = redis::from_redis_value(page)?;
                keys.extend(found);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(keys)
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A Lua script run by its hash, sent whole (`EVAL`) when the node that
/// runs it does not have it: on a cluster, `SCRIPT LOAD` goes to every node
/// and fails while one is down, and a replica promoted by a failover starts
/// without the scripts its primary had.
pub(crate) struct Lua {
    source: &'static str,
    hash: String,
}

impl Lua {
    pub(crate) fn new(source: &'static str) -> Lua {
        Lua {
            source,
            hash: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    /// A call with these keys (the first routes it on a cluster).
    pub(crate) fn call(&self) -> LuaCall<'_> {
        LuaCall {
            lua: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

pub(crate) struct LuaCall<'a> {
    lua: &'a Lua,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl LuaCall<'_> {
    pub(crate) fn key(&mut self, key: impl redis::ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub(crate) fn arg(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    fn command(&self, verb: &str, script: &str) -> Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script).arg(self.keys.len());
        for k in &self.keys {
            cmd.arg(k.as_slice());
        }
        for a in &self.args {
            cmd.arg(a.as_slice());
        }
        cmd
    }

    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        c: &mut Connection,
    ) -> RedisResult<T> {
        match self.command("EVALSHA", &self.lua.hash).query_async(c).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.command("EVAL", self.lua.source).query_async(c).await
            }
            result => result,
        }
    }

    /// [`invoke`](Self::invoke) on a blocking connection of a single server.
    pub(crate) fn invoke_blocking<T: redis::FromRedisValue>(
        &self,
        c: &mut redis::Connection,
    ) -> RedisResult<T> {
        match self.command("EVALSHA", &self.lua.hash).query(c) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.command("EVAL", self.lua.source).query(c)
            }
            result => result,
        }
    }
}
