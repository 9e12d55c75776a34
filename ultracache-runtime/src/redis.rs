//! The shared tier on Redis: many app servers, one cache, exact invalidation
//! everywhere (feature `redis`).
//!
//! Configure it once ([`Config::redis`](crate::Config::redis), or the
//! `ULTRACACHE_REDIS_URL` environment variable), and mark the caches whose
//! values may be shared: `#[cached(shared)]` or [`Cache::shared`](crate::Cache::shared).
//! The in-process store stays in front of Redis as the L1.
//!
//! - Entries are postcard bytes behind a header: a format version and the value
//!   type's fingerprint (its name and the shape serde gives it), so a deploy
//!   that changes a type reads old bytes as a miss, never as the new type.
//!   Bytes that do not decode are a miss, and are deleted.
//! - The registry (dependency → entry keys) lives in Redis. Storing checks, in
//!   one Lua script, that nothing the value read was invalidated since it was
//!   computed (generations live in Redis), then stores the entry and registers
//!   it; registry sets never expire before the entries they guard.
//! - Invalidating drops the entries in Redis and publishes the dependencies,
//!   in one script; every node drops its L1 copies when the message arrives.
//!   A node whose subscription broke drops its whole L1 when it is back.
//! - Fail open: Redis down, slow (past the timeout) or answering garbage means
//!   computing and serving, logged once per outage; L1 keeps working;
//!   invalidations made meanwhile are applied when Redis returns.
//! - Redis Cluster and Valkey clusters: [`Config::redis_cluster`](crate::Config::redis_cluster)
//!   (or `ULTRACACHE_REDIS_CLUSTER`) connects through seed nodes and follows
//!   redirects and topology changes (slot migration, failover).
//! - Keys: by default every key starts with `{prefix}` — one hash tag, so each
//!   script's keys share a slot on Redis Cluster and Valkey (atomicity holds
//!   per prefix; the prefix's keys live on one shard: separate prefixes spread
//!   over shards). [`Config::redis_sharded`](crate::Config::redis_sharded)
//!   spreads entries, registries and generations over slots instead, with a
//!   protocol of single-slot steps that keeps the same promise.
//!
//! Values that go to Redis need `serde::Serialize` and `Deserialize` (and keys
//! `Serialize`); a shared cache of another value type does not compile.

mod connect;
mod direct;
mod sharded;
mod tier;

use connect::Target;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dep::{Dep, Kind};
use crate::runtime::TierBackend;
use crate::tier::{Fetched, SharedTier};

pub(crate) use tier::{Tier, DEFAULT_TIMEOUT};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl SharedTier for Tier {
    fn entry_key(&self, cache: &str, key: &[u8]) -> String {
        Tier::entry_key(self, cache, key)
    }
    fn fetch_blocking(&self, key: String) -> Option<Fetched> {
        Tier::fetch_blocking(self, key)
    }
    fn fetch(&self, key: String) -> BoxFuture<'_, Option<Fetched>> {
        Box::pin(Tier::fetch(self, key))
    }
    fn store(&self, key: String, bytes: Vec<u8>, ttl: Option<Duration>, deps: &[Dep], since: u64) {
        Tier::store(self, key, bytes, ttl, deps, since, None);
    }
    fn lease_blocking(&self, key: String) -> Option<Fetched> {
        Tier::lease_blocking(self, key, None)
    }
    fn lease(&self, key: String) -> BoxFuture<'_, Option<Fetched>> {
        Box::pin(Tier::lease(self, key, None))
    }
    fn await_entry_blocking(&self, key: String, wait: Duration) -> Option<Fetched> {
        Tier::lease_blocking(self, key, Some(wait))
    }
    fn await_entry(&self, key: String, wait: Duration) -> BoxFuture<'_, Option<Fetched>> {
        Box::pin(Tier::lease(self, key, Some(wait)))
    }
    fn store_leased(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
        token: String,
    ) {
        Tier::store(self, key, bytes, ttl, deps, since, Some(token));
    }
    fn release(&self, key: String, token: String) {
        Tier::release(self, key, token);
    }
    fn store_now(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
    ) -> Option<bool> {
        Tier::store_now(self, key, bytes, ttl, deps, since)
    }
    fn store_now_async<'a>(
        &'a self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &'a [Dep],
        since: u64,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(Tier::store_now_async(self, key, bytes, ttl, deps, since))
    }
    fn delete(&self, key: String) {
        Tier::delete(self, key);
    }
    fn invalidate(&self, deps: &[Dep], kinds: &[Kind]) -> Option<u64> {
        Tier::invalidate(self, deps, kinds)
    }
    fn invalidate_async<'a>(
        &'a self,
        deps: &'a [Dep],
        kinds: &'a [Kind],
    ) -> BoxFuture<'a, Option<u64>> {
        Box::pin(Tier::invalidate_async(self, deps, kinds))
    }
    fn invalidate_acknowledged(
        &self,
        deps: &[Dep],
        kinds: &[Kind],
        wait: Duration,
    ) -> Option<(usize, usize)> {
        Tier::invalidate_acknowledged(self, deps, kinds, wait).map(|a| (a.waited_for, a.missing))
    }
    fn invalidate_acknowledged_async<'a>(
        &'a self,
        deps: &'a [Dep],
        kinds: &'a [Kind],
        wait: Duration,
    ) -> BoxFuture<'a, Option<(usize, usize)>> {
        Box::pin(async move {
            Tier::invalidate_acknowledged_async(self, deps, kinds, wait)
                .await
                .map(|a| (a.waited_for, a.missing))
        })
    }
    fn clear(&self) {
        Tier::clear(self);
    }
    fn stats(&self) -> TierStats {
        use std::sync::atomic::Ordering::SeqCst;
        TierStats {
            configured: true,
            errors: self.counts.errors.load(SeqCst),
            stores: self.counts.stores.load(SeqCst),
            refused: self.counts.refused.load(SeqCst),
            reconnects: self.counts.reconnects.load(SeqCst),
            leases: self.counts.leases.load(SeqCst),
            lease_waits: self.counts.lease_waits.load(SeqCst),
        }
    }
}

/// Starts the Redis tier the configuration (or `ULTRACACHE_REDIS_URL`) names.
fn start(config: &Config) -> Option<Arc<dyn SharedTier>> {
    let target = target(config)?;
    let prefix = config
        .redis_prefix
        .clone()
        .or_else(|| std::env::var("ULTRACACHE_REDIS_PREFIX").ok())
        .unwrap_or_else(|| "ultracache".into());
    let timeout = config.redis_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let sharded = config.redis_sharded.unwrap_or_else(|| {
        std::env::var("ULTRACACHE_REDIS_SHARDED").is_ok_and(|v| matches!(v.as_str(), "1" | "true"))
    });
    match Tier::start(&target, &prefix, timeout, sharded) {
        Ok(tier) => Some(tier),
        Err(e) => {
            tracing::error!("ultracache: no shared tier: {e}");
            None
        }
    }
}

/// The Redis the configuration names: a cluster if one is named (in the
/// configuration or `ULTRACACHE_REDIS_CLUSTER`), else one server.
fn target(config: &Config) -> Option<Target> {
    if let Some(nodes) = &config.redis_cluster {
        return Some(Target::Cluster(nodes.clone()));
    }
    if let Some(url) = &config.redis_url {
        return Some(Target::Url(url.clone()));
    }
    if let Ok(nodes) = std::env::var("ULTRACACHE_REDIS_CLUSTER") {
        let nodes: Vec<String> = nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        if !nodes.is_empty() {
            return Some(Target::Cluster(nodes));
        }
    }
    std::env::var("ULTRACACHE_REDIS_URL").ok().map(Target::Url)
}

inventory::submit!(TierBackend { start });

pub use crate::tier::TierStats;

/// Why an [acknowledged invalidation](invalidate_acknowledged) could not
/// confirm that every node dropped its copies. In every case this process's
/// copies and Redis's are dropped (or, for [`Unreachable`](Self::Unreachable),
/// kept for Redis and sent every second until they land).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotAcknowledged {
    /// Redis did not answer in time: the invalidation is kept and sent when
    /// it is back; other nodes may serve their copies until they hear of it.
    Unreachable,
    /// `missing` of the `waited_for` other live nodes had not applied it when
    /// the wait ended: slow or paused nodes, or a node that died less than
    /// 3 seconds ago (a node counts as live for 3 seconds after its last
    /// heartbeat).
    Missing {
        /// Other nodes that were live when the invalidation was made.
        waited_for: usize,
        /// Those that had not applied it when the wait ended.
        missing: usize,
    },
    /// Called inside an open database transaction: the invalidation is
    /// queued to its commit, as every invalidation there is.
    InTransaction,
}

impl std::fmt::Display for NotAcknowledged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAcknowledged::Unreachable => f.write_str(
                "Redis was not reached: the invalidation is kept and sent when it is back",
            ),
            NotAcknowledged::Missing {
                waited_for,
                missing,
            } => write!(
                f,
                "{missing} of {waited_for} other nodes had not applied the invalidation in time"
            ),
            NotAcknowledged::InTransaction => {
                f.write_str("inside a database transaction: applied when it commits")
            }
        }
    }
}

impl std::error::Error for NotAcknowledged {}

/// Invalidates what writing `obj` invalidates (as [`invalidate`](crate::invalidate)
/// does) on every node, and returns once every other live node has dropped
/// its copies, or when `wait` has passed: `Ok(n)` says that all `n` other
/// live nodes applied it.
///
/// A plain `invalidate` returns when this process's copies and Redis's are
/// gone; other nodes drop theirs when the pub/sub message reaches them (well
/// under a millisecond on one machine, but not before `invalidate` returns).
/// This form closes that window for callers that need it — a write followed
/// by a redirect to a page another node serves — at the cost of waiting for
/// the slowest node. Nodes say they are live with a heartbeat every second
/// while subscribed; each acknowledges an invalidation after applying it.
///
/// ```no_run
/// use std::time::Duration;
/// use ultracache::Trackable;
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// match ultracache::redis::invalidate_acknowledged(&Post { id: 7 }, Duration::from_millis(500)) {
///     Ok(nodes) => println!("{nodes} other nodes dropped post 7"),
///     Err(e) => eprintln!("not confirmed everywhere: {e}"),
/// }
/// ```
pub fn invalidate_acknowledged<T: crate::Trackable + ?Sized>(
    obj: &T,
    wait: Duration,
) -> Result<usize, NotAcknowledged> {
    invalidate_deps_acknowledged(&crate::invalidation::written(obj), wait)
}

/// The async form of [`invalidate_acknowledged`]: waits for the other nodes
/// without blocking a thread (on any executor).
///
/// ```no_run
/// # async fn demo() {
/// use std::time::Duration;
/// use ultracache::Trackable;
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let acked = ultracache::redis::invalidate_acknowledged_async(&Post { id: 7 }, Duration::from_millis(500)).await;
/// # let _ = acked;
/// # }
/// ```
pub async fn invalidate_acknowledged_async<T: crate::Trackable + ?Sized>(
    obj: &T,
    wait: Duration,
) -> Result<usize, NotAcknowledged> {
    let deps = crate::invalidation::written(obj);
    if let Some(queue) = crate::transaction::open() {
        queue.push(&deps, &[]);
        return Err(NotAcknowledged::InTransaction);
    }
    crate::listen::invalidating(&deps, &[]);
    let acks = match crate::runtime::get().tier() {
        Some(tier) => tier.invalidate_acknowledged_async(&deps, &[], wait).await,
        None => Some((0, 0)),
    };
    crate::invalidation::invalidate_local(&deps, &[]);
    acknowledgement(acks)
}

/// What the tier's answer means for the caller.
fn acknowledgement(acks: Option<(usize, usize)>) -> Result<usize, NotAcknowledged> {
    match acks {
        Some((waited_for, 0)) => Ok(waited_for),
        Some((waited_for, missing)) => Err(NotAcknowledged::Missing {
            waited_for,
            missing,
        }),
        None => Err(NotAcknowledged::Unreachable),
    }
}

/// [`invalidate_acknowledged`] for these dependencies (as
/// [`invalidate_deps`](crate::invalidate_deps)).
pub fn invalidate_deps_acknowledged(
    deps: &[Dep],
    wait: Duration,
) -> Result<usize, NotAcknowledged> {
    if let Some(queue) = crate::transaction::open() {
        queue.push(deps, &[]);
        return Err(NotAcknowledged::InTransaction);
    }
    crate::listen::invalidating(deps, &[]);
    let acks = match crate::runtime::get().tier() {
        Some(tier) if !deps.is_empty() => tier.invalidate_acknowledged(deps, &[], wait),
        // No other node is known to this process.
        _ => Some((0, 0)),
    };
    crate::invalidation::invalidate_local(deps, &[]);
    acknowledgement(acks)
}

/// This node's view of the shared tier.
pub fn tier_stats() -> TierStats {
    crate::runtime::get()
        .tier()
        .map_or_else(TierStats::default, |t| t.stats())
}
