//! The Redis tier: one background thread per process owns the connections
//! (a multiplexed one for commands, one for pub/sub) on a small runtime of its
//! own, so sync and async callers on any executor use it alike. Sync callers'
//! reads of a single server skip the hop: they run on the caller's thread,
//! on a small pool of blocking connections (`direct`).
//!
//! Fail open: every call has a timeout; a failure marks the tier down (logged
//! once per outage) and callers compute instead. While down, the tier is
//! retried at most once a second; invalidations that could not reach Redis
//! are kept (bounded) and applied when it is back. When the pub/sub
//! connection comes back after a break, this node drops its whole L1: it
//! cannot know which invalidations it missed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::mpsc as tmpsc;

use crate::clock;
use crate::dep::Dep;
use crate::wait::Promise;

use super::connect::{Backend, Connection, Lua, Target};
use super::direct::{AsyncDirect, Direct, Unanswered};
use super::sharded::{self, Held};
use crate::tier::codec::{dep_name, hash};
use crate::tier::{Fetched, Lease};

/// How long one Redis call may take before the tier counts as down.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// How often a down tier is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Invalidations kept while Redis is down; past this, the key space is
/// cleared when it returns.
const MAX_PENDING: usize = 10_000;
/// How long an invalidation's generation is kept in Redis: a computation that
/// runs longer than this may store a value read before the invalidation.
const GENERATION_TTL_SECS: u64 = 86_400;

const STORE: &str = r"
local since = tonumber(ARGV[3])
local prefix = ARGV[4]
-- The lease this store frees (ARGV[5], its token ARGV[6]; empty: none),
-- whether the value is stored or refused: nodes waiting on it go on.
local function release()
  if ARGV[5] ~= '' and redis.pcall('GET', ARGV[5]) == ARGV[6] then
    redis.call('DEL', ARGV[5])
  end
end
-- A generation that is not a number (or not a string) is unknown: it may be
-- newer than anything, so the value is refused.
local function newer(key)
  local g = redis.pcall('GET', key)
  if type(g) == 'table' then return true end
  if not g then return false end
  local n = tonumber(g)
  return (not n) or n > since
end
if newer(prefix .. 'cleared') then release() return 0 end
for i = 7, #ARGV do
  local dep = ARGV[i]
  if newer(prefix .. 'gen:' .. dep) then release() return 0 end
  local kind = string.match(dep, '^(.*):%d+$') or dep
  if newer(prefix .. 'wgen:' .. kind) then release() return 0 end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
-- A registry set never expires before an entry it guards: a set first made
-- for a timed entry gets its timeout, is extended for longer ones, and made
-- permanent for an entry without timeout.
local function guard(set, member)
  local existed = redis.call('EXISTS', set)
  if type(redis.pcall('SADD', set, member)) == 'table' then
    -- Not a set (damaged): replaced by one.
    redis.call('DEL', set)
    existed = 0
    redis.call('SADD', set, member)
  end
  if ttl == 0 then
    redis.call('PERSIST', set)
  elseif existed == 0 then
    redis.call('PEXPIRE', set, ttl)
  else
    local current = redis.call('PTTL', set)
    if current >= 0 and current < ttl then redis.call('PEXPIRE', set, ttl) end
  end
end
-- Members whose entry (or dependency set) is gone are pruned a few at a
-- time: each store adds at most one member and looks at up to three, so a
-- set stays near the entries that are alive.
local function prune(set, member_key)
  local sample = redis.pcall('SRANDMEMBER', set, 3)
  if type(sample) ~= 'table' or sample.err then return end
  for _, m in ipairs(sample) do
    if redis.call('EXISTS', member_key(m)) == 0 then redis.call('SREM', set, m) end
  end
end
local function entry(m) return m end
local function dep_set(m) return prefix .. 'dep:' .. m end
for i = 7, #ARGV do
  local dep = ARGV[i]
  guard(prefix .. 'dep:' .. dep, KEYS[1])
  prune(prefix .. 'dep:' .. dep, entry)
  local kind = string.match(dep, '^(.*):%d+$') or dep
  guard(prefix .. 'kind:' .. kind, dep)
  prune(prefix .. 'kind:' .. kind, dep_set)
end
release()
return 1
";

/// An entry and the tick (as a fetch reads them) and, on a miss, the key's
/// lease for this node (KEYS[2], token ARGV[1], for ARGV[2] ms) unless
/// another node holds it. Returns {entry or '', tick or '', lease}: lease 1
/// when taken, 0 when another node holds it.
const FETCH_LEASE: &str = r"
local entry = redis.pcall('GET', KEYS[1])
if type(entry) == 'table' then
  -- Not an entry (another type under its key): dropped, read as a miss.
  redis.call('DEL', KEYS[1])
  entry = false
end
-- In the sharded layout (ARGV[3] = 't'), a tombstone is a miss.
if entry and ARGV[3] == 't' and string.sub(entry, 1, 1) == 'T' then entry = false end
local tick = redis.pcall('GET', KEYS[3])
if type(tick) ~= 'string' then tick = '' end
if entry then return {entry, tick, 0} end
local taken = redis.pcall('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2]))
if type(taken) == 'table' and taken.err then
  -- Not a lease (damaged): replaced by this one.
  redis.call('DEL', KEYS[2])
  taken = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2]))
end
if taken then return {'', tick, 1} end
return {'', tick, 0}
";

/// Frees a lease if `token` still holds it.
pub(super) const RELEASE: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

const INVALIDATE: &str = r"
local prefix = ARGV[1]
local objects = tonumber(ARGV[4])
-- The tick starts from the clock in microseconds (a Redis that restarted
-- empty, or a tick that does not read as a number, never counts from below a
-- tick it gave before), and counts up from there.
local tick_key = prefix .. 'tick'
local tick = redis.pcall('INCR', tick_key)
if type(tick) == 'table' or tick == 1 then
  local now = redis.call('TIME')
  tick = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('SET', tick_key, string.format('%.0f', tick))
end
local dropped = 0
local function drop(dep)
  local set = prefix .. 'dep:' .. dep
  local keys = redis.pcall('SMEMBERS', set)
  if type(keys) == 'table' and keys.err then
    -- Not a set (damaged): its entries cannot be found from it; the
    -- generation set below refuses values computed before, and nodes drop
    -- their copies on the message.
    keys = {}
  end
  -- one DEL per 500 keys (unpack has a limit)
  for i = 1, #keys, 500 do
    dropped = dropped + redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
  end
  redis.call('DEL', set)
end
for i = 5, 4 + objects do
  redis.call('SET', prefix .. 'gen:' .. ARGV[i], tick, 'EX', tonumber(ARGV[3]))
  drop(ARGV[i])
end
for i = 5 + objects, #ARGV do
  local kind = ARGV[i]
  redis.call('SET', prefix .. 'wgen:' .. kind, tick, 'EX', tonumber(ARGV[3]))
  local index = prefix .. 'kind:' .. kind
  local deps = redis.pcall('SMEMBERS', index)
  if type(deps) == 'table' and deps.err then deps = {} end
  for _, dep in ipairs(deps) do drop(dep) end
  redis.call('DEL', index)
end
redis.call('PUBLISH', prefix .. 'invalidations', ARGV[2])
return string.format('%.0f', tick)
";

/// Takes the next tick (never below the clock in microseconds, as the
/// sharded layout's ticks) and marks the key space cleared at it.
const CLEAR_TICK: &str = r"
local now = redis.call('TIME')
local tick = tonumber(now[1]) * 1000000 + tonumber(now[2])
local stored = redis.pcall('GET', KEYS[1])
local n = nil
if type(stored) == 'string' then n = tonumber(stored) end
if n and n + 1 > tick then tick = n + 1 end
redis.call('SET', KEYS[1], string.format('%.0f', tick))
redis.call('SET', KEYS[2], string.format('%.0f', tick))
return string.format('%.0f', tick)
";

/// Registers this node as live (subscribed, so it acknowledges
/// invalidations), at Redis's clock; forgets nodes silent for a minute.
const HEARTBEAT: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if type(redis.pcall('ZADD', KEYS[1], ms, ARGV[1])) == 'table' then
  -- Not a sorted set (damaged): replaced by one.
  redis.call('DEL', KEYS[1])
  redis.call('ZADD', KEYS[1], ms, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - 60000)
return 1
";

/// The nodes heard from within the last ARGV[1] milliseconds.
const LIVE_NODES: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local nodes = redis.pcall('ZRANGEBYSCORE', KEYS[1], ms - tonumber(ARGV[1]), '+inf')
if type(nodes) == 'table' and nodes.err then return {} end
return nodes
";

/// A node counts as live (and is waited for by an acknowledged
/// invalidation) while its last heartbeat is this recent.
const LIVE: Duration = Duration::from_secs(3);
/// How long acknowledgements are kept in Redis.
const ACK_TTL_MS: u64 = 60_000;

/// What the tier is asked to do.
enum Op {
    Fetch {
        key: String,
        reply: Box<dyn FnOnce(Option<Fetched>) + Send>,
    },
    /// A fetch that takes the key's lease on a miss; with `wait`, while
    /// another node holds the lease, asks again until the entry is there,
    /// the lease is taken, or `wait` has passed.
    FetchLease {
        key: String,
        wait: Option<Duration>,
        /// The caller read the key already and found no entry: straight to
        /// the script.
        probed: bool,
        reply: Box<dyn FnOnce(Option<Fetched>) + Send>,
    },
    Release {
        key: String,
        token: String,
    },
    Store {
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: Vec<String>,
        since: u64,
        /// The lease the store frees (its token).
        lease: Option<String>,
        /// Told whether Redis stored the entry (`None`: it could not be asked).
        reply: Option<Box<dyn FnOnce(Option<bool>) + Send>>,
    },
    Invalidate {
        objects: Vec<String>,
        kinds: Vec<String>,
        reply: Box<dyn FnOnce(Option<u64>) + Send>,
    },
    /// An invalidation that waits (until `wait` has passed) for every other
    /// live node to say it has dropped its copies.
    InvalidateAcknowledged {
        objects: Vec<String>,
        kinds: Vec<String>,
        wait: Duration,
        reply: Box<dyn FnOnce(Option<Acks>) + Send>,
    },
    /// This node applied the invalidation that carried `token`.
    Ack {
        token: String,
    },
    /// This node is live.
    Heartbeat,
    Delete {
        key: String,
    },
    Clear {
        reply: Box<dyn FnOnce(Option<()>) + Send>,
    },
    /// Learns the tick and the last clear (sharded layout, once subscribed).
    Learn,
}

/// Counts of what the tier did, for statistics and tests.
#[derive(Default)]
pub(crate) struct TierCounts {
    pub(crate) errors: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// Leases this node took (it computed a key for the cluster).
    pub(crate) leases: AtomicU64,
    /// Times this node asked again for a key another node held the lease of.
    pub(crate) lease_waits: AtomicU64,
}

/// The other live nodes an acknowledged invalidation waited for, and those
/// that had not acknowledged it when the wait ended.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acks {
    pub(crate) waited_for: usize,
    pub(crate) missing: usize,
}

pub(crate) struct Tier {
    pub(crate) prefix: String,
    /// This node's name among the nodes (random per process).
    node: String,
    /// The invalidation subscription is up (the node hears, and acknowledges).
    subscribed: AtomicBool,
    ops: tmpsc::UnboundedSender<Op>,
    down: AtomicBool,
    last_failure: AtomicU64,
    timeout: Duration,
    pending: Mutex<Pending>,
    /// Invalidations (or a clear) are kept for Redis: until they reach it,
    /// what Redis holds may be older than this node's writes.
    owed: AtomicBool,
    /// A replay is on its way to Redis.
    replaying: AtomicBool,
    pub(crate) counts: TierCounts,
    /// Blocking connections for sync callers' reads (a single server only).
    direct: Option<Direct>,
    /// The async callers' connections for their reads (a single server).
    async_direct: Option<AsyncDirect>,
    /// The fetch-lease script.
    fetch_lease: Lua,
    /// The sharded layout's keys (`None`: every key under the prefix's tag).
    sharded: Option<sharded::Keys>,
    /// In the sharded layout, the last clear this node knows of: a value
    /// computed from reads that began before it is a miss.
    cleared: AtomicU64,
    /// In the sharded layout, the latest tick this node has heard of (from
    /// invalidation messages, its own invalidations, and a read once
    /// subscribed): a miss starts its computation from it instead of asking
    /// the tick's primary. It is never ahead of Redis's tick, and a message
    /// is published after its write committed, so a computation starting
    /// from it reads data at least that new (a tick behind only refuses
    /// more).
    heard: AtomicU64,
    /// `heard` is current: subscribed, and the tick read since.
    learned: AtomicBool,
}

#[derive(Default)]
struct Pending {
    objects: Vec<String>,
    kinds: Vec<String>,
    overflow: bool,
}

impl Tier {
    /// Starts the tier for `target`; keys are `{prefix}…` (one hash tag, so a
    /// script's keys share a cluster slot), or spread over slots when
    /// `sharded` (see [`sharded`]).
    pub(crate) fn start(
        target: &Target,
        prefix: &str,
        timeout: Duration,
        sharded: bool,
    ) -> Result<Arc<Tier>, String> {
        let client = Backend::open(target, timeout)?;
        let (tx, rx) = tmpsc::unbounded_channel();
        let tier = Arc::new(Tier {
            prefix: format!("{{{prefix}}}"),
            node: format!(
                "{:016x}",
                crate::dep::mix(
                    crate::entry::next_id()
                        ^ u64::from(std::process::id()) << 32
                        ^ std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos() as u64)
                )
            ),
            subscribed: AtomicBool::new(false),
            ops: tx,
            down: AtomicBool::new(false),
            last_failure: AtomicU64::new(0),
            timeout,
            pending: Mutex::new(Pending::default()),
            owed: AtomicBool::new(false),
            replaying: AtomicBool::new(false),
            counts: TierCounts::default(),
            direct: match &client {
                Backend::Single(c) if !sharded => Some(Direct::new(c.clone(), timeout)),
                _ => None,
            },
            async_direct: match &client {
                Backend::Single(c) if !sharded => Some(AsyncDirect::new(c.clone(), timeout)),
                _ => None,
            },
            fetch_lease: Lua::new(FETCH_LEASE),
            sharded: sharded.then(|| sharded::Keys::new(prefix)),
            cleared: AtomicU64::new(0),
            heard: AtomicU64::new(0),
            learned: AtomicBool::new(false),
        });
        let worker = Arc::downgrade(&tier);
        std::thread::Builder::new()
            .name("ultracache-redis".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("ultracache: cannot start the Redis tier's runtime: {e}");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, run(client, worker, rx));
            })
            .map_err(|e| format!("cannot start the Redis tier's thread: {e}"))?;
        Ok(tier)
    }

    /// Whether calls should be tried now (not down, or down long enough ago).
    pub(crate) fn available(&self) -> bool {
        !self.down.load(SeqCst)
            || clock::now().saturating_sub(self.last_failure.load(SeqCst)) > RETRY.as_nanos() as u64
    }

    /// Whether Redis may be read and written now: available, and owed no
    /// invalidation (until it has them, it may hold what this node's writes
    /// dropped, and would accept values they made stale).
    fn usable(&self) -> bool {
        !self.owed.load(SeqCst) && self.available()
    }

    fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.counts.errors.fetch_add(1, SeqCst);
        self.last_failure.store(clock::now(), SeqCst);
        if !self.down.swap(true, SeqCst) {
            tracing::error!(
                "ultracache: Redis unavailable ({what}: {error}); serving from the \
                 in-process cache and computing until it is back"
            );
        }
    }

    fn succeeded(self: &Arc<Self>) {
        if self.down.swap(false, SeqCst) {
            tracing::info!("ultracache: Redis reachable again");
            self.replay();
        }
    }

    /// Sends what is kept for Redis; what does not reach it is kept again.
    /// Runs when Redis answers again, and every [`RETRY`] while something is
    /// owed (an idle writer's invalidations reach the other nodes too).
    fn replay(self: &Arc<Self>) {
        if self.replaying.swap(true, SeqCst) {
            return;
        }
        // Still owed until Redis has it: reads and stores wait for that.
        let replay =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let landing = Landing {
            tier: Arc::downgrade(self),
            objects: replay.objects,
            kinds: replay.kinds,
            clear: replay.overflow,
            landed: false,
        };
        if landing.clear {
            self.send(Op::Clear {
                reply: Box::new(move |done| landing.land(done.is_some())),
            });
        } else if !landing.objects.is_empty() || !landing.kinds.is_empty() {
            let (objects, kinds) = (landing.objects.clone(), landing.kinds.clone());
            self.send(Op::Invalidate {
                objects,
                kinds,
                reply: Box::new(move |tick| landing.land(tick.is_some())),
            });
        } else {
            landing.land(true);
        }
    }

    /// A replay landed: nothing is owed unless more was kept meanwhile.
    fn settled(&self) {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.objects.is_empty() && pending.kinds.is_empty() && !pending.overflow {
            self.owed.store(false, SeqCst);
        }
    }

    fn send(&self, op: Op) -> bool {
        self.ops.send(op).is_ok()
    }

    fn key(&self, cache: &str, key_hash: u64) -> String {
        match &self.sharded {
            Some(keys) => keys.entry(cache, key_hash),
            None => format!("{}e:{cache}:{key_hash:016x}", self.prefix),
        }
    }

    /// The last clear this node knows of (sharded layout).
    fn cleared(&self) -> u64 {
        self.cleared.load(SeqCst)
    }

    /// Learns of a clear at `tick`.
    fn saw_clear(&self, tick: u64) {
        self.cleared.fetch_max(tick, SeqCst);
        self.heard(tick);
    }

    /// Learns of an invalidation (or a clear) at `tick`.
    fn heard(&self, tick: u64) {
        self.heard.fetch_max(tick, SeqCst);
    }

    /// The tick a computation starting now may start from without asking
    /// Redis (sharded layout): `None` unless subscribed and learned.
    fn heard_tick(&self) -> Option<u64> {
        (self.learned.load(SeqCst) && self.subscribed.load(SeqCst)).then(|| self.heard.load(SeqCst))
    }

    /// The entry key of `cache`'s entry with these key bytes.
    pub(crate) fn entry_key(&self, cache: &str, key: &[u8]) -> String {
        self.key(cache, hash(key) ^ key.len() as u64)
    }

    /// Fetches an entry, blocking this thread (for sync callers) at most the
    /// tier's timeout.
    pub(crate) fn fetch_blocking(&self, key: String) -> Option<Fetched> {
        if !self.usable() {
            return None;
        }
        if let Some(result) = self
            .direct()
            .and_then(|d| d.call(|c| fetch_blocking_on(c, &self.prefix, &key)))
        {
            return self.answered(result);
        }
        let (reply, answer) = promise();
        self.send(Op::Fetch { key, reply });
        answer.take_timeout(self.timeout).flatten()
    }

    /// The blocking connections for a sync caller's read: while the tier is
    /// up (a down tier is tried again through its own thread, which notices
    /// when Redis is back).
    fn direct(&self) -> Option<&Direct> {
        self.direct.as_ref().filter(|_| !self.down.load(SeqCst))
    }

    /// A direct read's answer; a failure counts as one of the tier's.
    fn answered(&self, result: redis::RedisResult<Fetched>) -> Option<Fetched> {
        match result {
            Ok(fetched) => Some(fetched),
            Err(e) => {
                if let Some(direct) = &self.direct {
                    direct.forget();
                }
                self.failed("command", &e);
                None
            }
        }
    }

    /// Fetches an entry (for async callers, on any executor).
    pub(crate) async fn fetch(&self, key: String) -> Option<Fetched> {
        if !self.usable() {
            return None;
        }
        let (reply, answer) = promise();
        self.send(Op::Fetch { key, reply });
        answer.take_async_timeout(self.timeout).await.flatten()
    }

    /// Stores an entry (in the background: the Redis-side check refuses a
    /// value whose dependencies were invalidated since `since`).
    pub(crate) fn store(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
        lease: Option<String>,
    ) {
        if self.usable() {
            self.send(Op::Store {
                key,
                bytes,
                ttl,
                deps: deps.iter().map(dep_name).collect(),
                since,
                lease,
                reply: None,
            });
        } else if let Some(token) = lease {
            self.release(key, token);
        }
    }

    /// A fetch for a caller about to compute: takes the key's lease on a
    /// miss (blocking at most the timeout).
    pub(crate) fn lease_blocking(&self, key: String, wait: Option<Duration>) -> Option<Fetched> {
        if !self.usable() {
            return None;
        }
        if let Some(direct) = self.direct() {
            // A hit is one plain GET (a hit needs no tick: a value found is
            // not computed here); a miss, or anything that is not an entry,
            // goes on to the script that takes the lease (and reads the tick
            // the computation starts from).
            let result = direct.call(|c| {
                let (entry,): (redis::Value,) = redis::pipe().ignore_errors().get(&key).query(c)?;
                if let redis::Value::BulkString(bytes) = entry {
                    return Ok(Fetched {
                        bytes: Some(bytes),
                        since: 0,
                        lease: Lease::None,
                    });
                }
                fetch_lease_blocking(c, self, &key, wait)
            });
            if let Some(result) = result {
                return self.answered(result);
            }
        }
        let (reply, answer) = self.leased_reply(&key);
        self.send(Op::FetchLease {
            key,
            wait,
            probed: false,
            reply,
        });
        let bound = self.timeout * 2 + wait.unwrap_or_default();
        answer.take_timeout(bound).flatten()
    }

    /// The reply for a lease fetch: a lease taken for a caller that gave up
    /// (timed out, or its future was dropped) is freed at once, not held
    /// until it expires.
    #[allow(clippy::type_complexity)]
    fn leased_reply(
        &self,
        key: &str,
    ) -> (
        Box<dyn FnOnce(Option<Fetched>) + Send>,
        Arc<Promise<Option<Fetched>>>,
    ) {
        let answer = Arc::new(Promise::new());
        let set = Arc::clone(&answer);
        let ops = self.ops.clone();
        let key = key.to_owned();
        let reply = Box::new(move |fetched: Option<Fetched>| {
            if Arc::strong_count(&set) == 1 {
                if let Some(Fetched {
                    lease: Lease::Acquired(token),
                    ..
                }) = fetched
                {
                    let _ = ops.send(Op::Release { key, token });
                }
                return;
            }
            set.fulfil(fetched);
        });
        (reply, answer)
    }

    /// The async form of [`lease_blocking`](Self::lease_blocking).
    pub(crate) async fn lease(&self, key: String, wait: Option<Duration>) -> Option<Fetched> {
        if !self.usable() {
            return None;
        }
        let mut probed = false;
        if let Some(direct) = self
            .async_direct
            .as_ref()
            .filter(|_| !self.down.load(SeqCst))
        {
            // A hit is one plain GET on this runtime's connection; a miss
            // goes on to the script that takes the lease, on the tier's
            // thread.
            match direct.get(&key).await {
                Ok(redis::Value::BulkString(bytes)) => {
                    return Some(Fetched {
                        bytes: Some(bytes),
                        since: 0,
                        lease: Lease::None,
                    })
                }
                Ok(_) => probed = true,
                Err(Unanswered::TimedOut) => {
                    self.failed("command", &"timed out");
                    return None;
                }
                Err(Unanswered::NoConnection) => {}
            }
        }
        let (reply, answer) = self.leased_reply(&key);
        self.send(Op::FetchLease {
            key,
            wait,
            probed,
            reply,
        });
        let bound = self.timeout * 2 + wait.unwrap_or_default();
        answer.take_async_timeout(bound).await.flatten()
    }

    /// Frees a lease this node holds (in the background).
    pub(crate) fn release(&self, key: String, token: String) {
        self.send(Op::Release { key, token });
    }

    /// Stores a value written (not computed) unless one of `deps` was
    /// invalidated after Redis's tick `since`, and waits (at most the timeout)
    /// for the answer, so that no node reads an older entry from Redis after
    /// this returns. `Some(stored)`, or `None` when Redis could not be asked.
    pub(crate) fn store_now(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
    ) -> Option<bool> {
        if !self.usable() {
            return None;
        }
        let (reply, answer) = promise();
        if !self.send(written(key, bytes, ttl, deps, since, reply)) {
            return None;
        }
        answer.take_timeout(self.timeout).flatten()
    }

    /// The async form of [`store_now`](Self::store_now).
    pub(crate) async fn store_now_async(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
    ) -> Option<bool> {
        if !self.usable() {
            return None;
        }
        let (reply, answer) = promise();
        if !self.send(written(key, bytes, ttl, deps, since, reply)) {
            return None;
        }
        answer.take_async_timeout(self.timeout).await.flatten()
    }

    /// Deletes an entry that did not decode.
    pub(crate) fn delete(&self, key: String) {
        self.send(Op::Delete { key });
    }

    /// Invalidates in Redis and on every node; waits (at most the timeout) so
    /// that no node reads the old entries from Redis after this returns.
    /// Redis's tick for the invalidation, when Redis took it.
    pub(crate) fn invalidate(&self, deps: &[Dep], kinds: &[crate::dep::Kind]) -> Option<u64> {
        let sent = self.send_invalidation(deps, kinds, |objects, kinds, reply| Op::Invalidate {
            objects,
            kinds,
            reply,
        })?;
        let tick = sent.answer(|a| a.take_timeout(self.timeout));
        sent.settle(self, tick)
    }

    /// The async form of [`invalidate`](Self::invalidate).
    pub(crate) async fn invalidate_async(
        &self,
        deps: &[Dep],
        kinds: &[crate::dep::Kind],
    ) -> Option<u64> {
        let sent = self.send_invalidation(deps, kinds, |objects, kinds, reply| Op::Invalidate {
            objects,
            kinds,
            reply,
        })?;
        let tick = match &sent.answer {
            Some(a) => a.take_async_timeout(self.timeout).await.flatten(),
            None => None,
        };
        sent.settle(self, tick)
    }

    /// [`invalidate`](Self::invalidate), then waits (at most `wait`) until
    /// every other live node has applied it. `None`: Redis was not reached
    /// (the invalidation is kept, as `invalidate` keeps it).
    pub(crate) fn invalidate_acknowledged(
        &self,
        deps: &[Dep],
        kinds: &[crate::dep::Kind],
        wait: Duration,
    ) -> Option<Acks> {
        let sent = self.send_invalidation(deps, kinds, |objects, kinds, reply| {
            Op::InvalidateAcknowledged {
                objects,
                kinds,
                wait,
                reply,
            }
        })?;
        let acks = sent.answer(|a| a.take_timeout(self.timeout * 2 + wait));
        sent.settle(self, acks)
    }

    /// The async form of [`invalidate_acknowledged`](Self::invalidate_acknowledged).
    pub(crate) async fn invalidate_acknowledged_async(
        &self,
        deps: &[Dep],
        kinds: &[crate::dep::Kind],
        wait: Duration,
    ) -> Option<Acks> {
        let sent = self.send_invalidation(deps, kinds, |objects, kinds, reply| {
            Op::InvalidateAcknowledged {
                objects,
                kinds,
                wait,
                reply,
            }
        })?;
        let acks = match &sent.answer {
            Some(a) => a
                .take_async_timeout(self.timeout * 2 + wait)
                .await
                .flatten(),
            None => None,
        };
        sent.settle(self, acks)
    }

    /// Sends the invalidation `op` builds (from the names and its reply).
    /// `None` when there is nothing to invalidate or Redis is down (then it
    /// is kept, for when Redis is back).
    fn send_invalidation<T: Send + 'static>(
        &self,
        deps: &[Dep],
        kinds: &[crate::dep::Kind],
        op: impl FnOnce(Vec<String>, Vec<String>, Box<dyn FnOnce(Option<T>) + Send>) -> Op,
    ) -> Option<SentInvalidation<T>> {
        let (objects, kinds) = self.to_invalidate(deps, kinds)?;
        let (reply, answer) = promise();
        let sent = self.send(op(objects.clone(), kinds.clone(), reply));
        Some(SentInvalidation {
            answer: sent.then_some(answer),
            objects,
            kinds,
        })
    }

    /// The names to invalidate; `None` when there are none, or when Redis is
    /// down (they are kept, for when it is back).
    fn to_invalidate(
        &self,
        deps: &[Dep],
        kinds: &[crate::dep::Kind],
    ) -> Option<(Vec<String>, Vec<String>)> {
        let objects: Vec<String> = deps.iter().map(dep_name).collect();
        let kinds: Vec<String> = kinds.iter().map(|k| k.name().to_owned()).collect();
        if objects.is_empty() && kinds.is_empty() {
            return None;
        }
        if !self.available() {
            self.keep(objects, kinds);
            return None;
        }
        Some((objects, kinds))
    }

    /// Keeps a clear for Redis (it clears everything: nothing else is kept).
    fn keep_clear(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.overflow = true;
        pending.objects.clear();
        pending.kinds.clear();
        self.owed.store(true, SeqCst);
    }

    fn keep(&self, objects: Vec<String>, kinds: Vec<String>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        self.owed.store(true, SeqCst);
        if pending.objects.len() + pending.kinds.len() + objects.len() + kinds.len() > MAX_PENDING {
            pending.overflow = true;
            pending.objects.clear();
            pending.kinds.clear();
        } else if !pending.overflow {
            pending.objects.extend(objects);
            pending.kinds.extend(kinds);
        }
    }

    /// Drops every entry under the prefix, on every node.
    pub(crate) fn clear(&self) {
        let (reply, answer) = promise();
        let cleared = self.send(Op::Clear { reply })
            && answer.take_timeout(self.timeout * 4).flatten().is_some();
        if !cleared {
            // Kept, and sent when Redis answers again.
            self.keep_clear();
        }
    }
}

/// A replay on its way to Redis. If it does not land (Redis did not answer,
/// or the call timed out and was dropped unanswered), what it carried is kept
/// again.
struct Landing {
    tier: std::sync::Weak<Tier>,
    objects: Vec<String>,
    kinds: Vec<String>,
    clear: bool,
    landed: bool,
}

impl Landing {
    fn land(mut self, landed: bool) {
        self.landed = landed;
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        let Some(tier) = self.tier.upgrade() else {
            return;
        };
        tier.replaying.store(false, SeqCst);
        if self.landed {
            tier.settled();
        } else if self.clear {
            tier.keep_clear();
        } else {
            tier.keep(
                std::mem::take(&mut self.objects),
                std::mem::take(&mut self.kinds),
            );
        }
    }
}

/// An invalidation handed to the tier's worker: Redis's answer to wait for
/// (`None` when it could not be sent), and the names, kept for replay unless
/// Redis answers.
struct SentInvalidation<T> {
    answer: Option<Arc<Promise<Option<T>>>>,
    objects: Vec<String>,
    kinds: Vec<String>,
}

impl<T> SentInvalidation<T> {
    /// Waits for the answer with `wait` (blocking).
    fn answer(&self, wait: impl FnOnce(&Promise<Option<T>>) -> Option<Option<T>>) -> Option<T> {
        self.answer.as_deref().and_then(wait).flatten()
    }

    /// `got`, after keeping the invalidation for replay when Redis did not
    /// answer.
    fn settle(self, tier: &Tier, got: Option<T>) -> Option<T> {
        if got.is_none() {
            tier.keep(self.objects, self.kinds);
        }
        got
    }
}

/// A reply for the worker to call, and the promise the caller waits on.
#[allow(clippy::type_complexity)]
fn promise<T: Send + 'static>() -> (Box<dyn FnOnce(T) + Send>, Arc<Promise<T>>) {
    let answer = Arc::new(Promise::new());
    let set = Arc::clone(&answer);
    (Box::new(move |v| set.fulfil(v)), answer)
}

/// The op that stores a written value, telling `reply` whether Redis has it.
fn written(
    key: String,
    bytes: Vec<u8>,
    ttl: Option<Duration>,
    deps: &[Dep],
    since: u64,
    reply: impl FnOnce(Option<bool>) + Send + 'static,
) -> Op {
    Op::Store {
        key,
        bytes,
        ttl,
        deps: deps.iter().map(dep_name).collect(),
        since,
        lease: None,
        reply: Some(Box::new(reply)),
    }
}

/// The message published for an invalidation: one dependency a line, `*kind`
/// for a whole kind; `clear` for everything.
fn message(objects: &[String], kinds: &[String], ack: Option<&str>) -> String {
    let mut m = String::from("v1");
    if let Some(token) = ack {
        // A line no dependency has: nodes that know it acknowledge.
        m.push_str("\n!ack ");
        m.push_str(token);
    }
    for o in objects {
        m.push('\n');
        m.push_str(o);
    }
    for k in kinds {
        m.push_str("\n*");
        m.push_str(k);
    }
    m
}

/// A dependency a message names: on its own line, or (`*`) its whole kind.
fn named(dep: Dep, as_kind: bool, deps: &mut Vec<Dep>, kinds: &mut Vec<crate::dep::Kind>) {
    if as_kind {
        kinds.push(dep.model_kind());
    } else {
        deps.push(dep);
    }
}

/// Applies an invalidation message from another node (or this one) locally;
/// the acknowledgement token it asks for, if any.
fn apply(message: &str) -> Option<String> {
    let mut lines = message.lines();
    match lines.next() {
        Some("clear") => crate::invalidation::clear_local(),
        Some("v1") => {
            let mut deps = Vec::new();
            let mut kinds = Vec::new();
            let mut ack = None;
            // Names this node cannot resolve: no entry here depends on
            // them now, but a computation under way may have read them.
            let mut unresolved = Vec::new();
            for line in lines {
                if line.starts_with("!tick ") {
                    // The invalidation's tick (read by the listener).
                    continue;
                }
                if let Some(token) = line.strip_prefix("!ack ") {
                    // A token is ours only if it looks like one we make.
                    if token.len() <= 64 && token.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        ack = Some(token.to_owned());
                    }
                    continue;
                }
                let (text, as_kind) = match line.strip_prefix('*') {
                    Some(kind) => (kind, true),
                    None => (line, false),
                };
                match crate::names::parse_any(text) {
                    Some(Ok(d)) => named(d, as_kind, &mut deps, &mut kinds),
                    Some(Err(unnamed)) => unresolved.push((text, as_kind, unnamed)),
                    None => {}
                }
            }
            if !unresolved.is_empty() {
                // Versioned first (versions are kept by hash): a computation
                // that read one fails its check if it registers from now on.
                // Then looked for again: an entry that registered before
                // that is found, and dropped with the rest.
                let versions = crate::versions::versions();
                for (_, as_kind, unnamed) in &unresolved {
                    if *as_kind {
                        versions.stamp_kind(unnamed.model_kind());
                    } else {
                        versions.stamp(std::slice::from_ref(unnamed));
                    }
                }
                for (text, as_kind, _) in unresolved {
                    if let Some(Ok(d)) = crate::names::parse_any(text) {
                        named(d, as_kind, &mut deps, &mut kinds);
                    }
                }
            }
            crate::invalidation::invalidate_local(&deps, &kinds);
            return ack;
        }
        _ => tracing::warn!("ultracache: ignored an invalidation message it does not understand"),
    }
    None
}

/// The tier's scripts, shared by the worker's tasks.
struct Scripts {
    store: std::rc::Rc<Lua>,
    invalidate: std::rc::Rc<Lua>,
    clear_tick: std::rc::Rc<Lua>,
    heartbeat: std::rc::Rc<Lua>,
    live_nodes: std::rc::Rc<Lua>,
    release: std::rc::Rc<Lua>,
    sharded: std::rc::Rc<sharded::Scripts>,
}

type Conn = std::rc::Rc<std::cell::RefCell<Option<Connection>>>;

async fn connection(
    client: &Backend,
    conn: &Conn,
    timeout: Duration,
) -> redis::RedisResult<Connection> {
    if let Some(c) = conn.borrow().clone() {
        return Ok(c);
    }
    let c = tokio::time::timeout(timeout, client.connect())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    *conn.borrow_mut() = Some(c.clone());
    Ok(c)
}

async fn run(client: Backend, tier: std::sync::Weak<Tier>, mut ops: tmpsc::UnboundedReceiver<Op>) {
    let conn: Conn = Default::default();
    // Calls failed in a row.
    let failures = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let store = std::rc::Rc::new(Lua::new(STORE));
    let invalidate = std::rc::Rc::new(Lua::new(INVALIDATE));
    let clear_tick = std::rc::Rc::new(Lua::new(CLEAR_TICK));
    let heartbeat = std::rc::Rc::new(Lua::new(HEARTBEAT));
    let release = std::rc::Rc::new(Lua::new(RELEASE));
    let live_nodes = std::rc::Rc::new(Lua::new(LIVE_NODES));
    let sharded_scripts = std::rc::Rc::new(sharded::Scripts::new());
    tokio::task::spawn_local(listen(client.clone(), tier.clone()));
    // What is owed to Redis is sent every RETRY until it lands, whether or
    // not this node calls again.
    let owed = tier.clone();
    tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(RETRY).await;
            let Some(t) = owed.upgrade() else { return };
            if t.owed.load(SeqCst) {
                t.replay();
            }
            if t.subscribed.load(SeqCst) {
                t.send(Op::Heartbeat);
            }
        }
    });
    while let Some(op) = ops.recv().await {
        let Some(t) = tier.upgrade() else { return };
        let (client, conn, failures) = (client.clone(), conn.clone(), failures.clone());
        let scripts = Scripts {
            store: store.clone(),
            invalidate: invalidate.clone(),
            clear_tick: clear_tick.clone(),
            heartbeat: heartbeat.clone(),
            live_nodes: live_nodes.clone(),
            release: release.clone(),
            sharded: sharded_scripts.clone(),
        };
        tokio::task::spawn_local(async move {
            let timeout = match &op {
                Op::InvalidateAcknowledged { wait, .. } => t.timeout * 2 + *wait,
                Op::FetchLease {
                    wait: Some(wait), ..
                } => t.timeout * 2 + *wait,
                _ => t.timeout,
            };
            let result =
                tokio::time::timeout(timeout, execute(op, &client, &conn, &t, &scripts)).await;
            match result {
                Ok(Ok(())) => {
                    failures.set(0);
                    t.succeeded();
                }
                Ok(Err(e)) => {
                    failures.set(failures.get() + 1);
                    // A server connection is made afresh. A cluster
                    // connection refreshes its own view of the slots after
                    // a failed call (a failover, a moved slot): it is made
                    // afresh from the seed nodes only if that keeps failing.
                    if matches!(client, Backend::Single(_)) || failures.get() >= 3 {
                        *conn.borrow_mut() = None;
                        failures.set(0);
                    }
                    t.failed("command", &e);
                }
                Err(_) => t.failed("command", &"timed out"),
            }
        });
    }
}

async fn execute(
    op: Op,
    client: &Backend,
    conn: &Conn,
    tier: &Tier,
    scripts: &Scripts,
) -> redis::RedisResult<()> {
    let timeout = tier.timeout;
    match op {
        Op::Fetch { key, reply } => {
            let mut c = match connection(client, conn, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    reply(None);
                    return Err(e);
                }
            };
            if tier.sharded.is_some() {
                return match fetch_sharded(&mut c, tier, &key).await {
                    Ok(fetched) => {
                        reply(Some(fetched));
                        Ok(())
                    }
                    Err(e) => {
                        reply(None);
                        Err(e)
                    }
                };
            }
            let result: redis::RedisResult<(redis::Value, redis::Value)> =
                fetch_pipeline(&tier.prefix, &key).query_async(&mut c).await;
            match result {
                Ok((entry, tick)) => {
                    let (fetched, bad) = fetched(&key, entry, tick);
                    if bad {
                        let _: redis::RedisResult<()> = c.del(&key).await;
                    }
                    reply(Some(fetched));
                    Ok(())
                }
                Err(e) => {
                    reply(None);
                    Err(e)
                }
            }
        }
        Op::FetchLease {
            key,
            wait,
            probed,
            reply,
        } => {
            let mut c = match connection(client, conn, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    reply(None);
                    return Err(e);
                }
            };
            match fetch_lease(&mut c, tier, &key, wait, probed).await {
                Ok(fetched) => {
                    reply(Some(fetched));
                    Ok(())
                }
                Err(e) => {
                    reply(None);
                    Err(e)
                }
            }
        }
        Op::Release { key, token } => {
            let mut c = connection(client, conn, timeout).await?;
            let _: i64 = scripts
                .release
                .call()
                .key(lease_key(&key))
                .arg(token)
                .invoke(&mut c)
                .await?;
            Ok(())
        }
        Op::Store {
            key,
            bytes,
            ttl,
            deps,
            since,
            lease,
            reply,
        } => {
            let mut c = match connection(client, conn, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    if let Some(reply) = reply {
                        reply(None);
                    }
                    return Err(e);
                }
            };
            let ttl_ms = ttl.map_or(0, |t| t.as_millis().max(1) as u64);
            if let Some(keys) = &tier.sharded {
                let lease_key = lease_key(&key);
                let stored = sharded::store(
                    &c,
                    keys,
                    &scripts.sharded,
                    &key,
                    (&lease_key, lease.as_deref().unwrap_or("")),
                    sharded::frame(&bytes, since),
                    ttl_ms,
                    since,
                    &deps,
                )
                .await;
                match &stored {
                    Ok(true) => tier.counts.stores.fetch_add(1, SeqCst),
                    Ok(false) => tier.counts.refused.fetch_add(1, SeqCst),
                    Err(_) => 0,
                };
                if let Some(reply) = reply {
                    reply(stored.as_ref().ok().copied());
                }
                return stored.map(drop);
            }
            let mut invocation = scripts.store.call();
            invocation.key(&key);
            invocation
                .arg(bytes)
                .arg(ttl_ms)
                .arg(since)
                .arg(&tier.prefix);
            match &lease {
                Some(token) => invocation.arg(lease_key(&key)).arg(token),
                None => invocation.arg("").arg(""),
            };
            for d in &deps {
                invocation.arg(d);
            }
            let stored = invocation.invoke::<i64>(&mut c).await;
            match &stored {
                Ok(1) => tier.counts.stores.fetch_add(1, SeqCst),
                Ok(_) => tier.counts.refused.fetch_add(1, SeqCst),
                Err(_) => 0,
            };
            if let Some(reply) = reply {
                reply(stored.as_ref().ok().map(|n| *n == 1));
            }
            stored.map(drop)
        }
        Op::Invalidate {
            objects,
            kinds,
            reply,
        } => {
            let mut c = match connection(client, conn, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    reply(None);
                    return Err(e);
                }
            };
            match invalidate_in_redis(&mut c, tier, scripts, &objects, &kinds, None).await {
                Ok(n) => {
                    reply(Some(n));
                    Ok(())
                }
                Err(e) => {
                    reply(None);
                    Err(e)
                }
            }
        }
        Op::InvalidateAcknowledged {
            objects,
            kinds,
            wait,
            reply,
        } => {
            let mut c = match connection(client, conn, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    reply(None);
                    return Err(e);
                }
            };
            match acknowledged(&mut c, tier, scripts, &objects, &kinds, wait).await {
                Ok(acks) => {
                    reply(Some(acks));
                    Ok(())
                }
                Err(e) => {
                    reply(None);
                    Err(e)
                }
            }
        }
        Op::Ack { token } => {
            let mut c = connection(client, conn, timeout).await?;
            let set = format!("{}ack:{token}", tier.prefix);
            // A damaged key is bad data, not an outage: the writer then
            // reports this node as not having acknowledged.
            let _: redis::RedisResult<redis::Value> = redis::pipe()
                .ignore_errors()
                .sadd(&set, &tier.node)
                .pexpire(&set, ACK_TTL_MS as i64)
                .query_async(&mut c)
                .await;
            Ok(())
        }
        Op::Heartbeat => {
            let mut c = connection(client, conn, timeout).await?;
            let _: i64 = scripts
                .heartbeat
                .call()
                .key(format!("{}nodes", tier.prefix))
                .arg(&tier.node)
                .invoke(&mut c)
                .await?;
            Ok(())
        }
        Op::Learn => {
            let c = connection(client, conn, timeout).await?;
            tier.saw_clear(sharded::cleared(&c, &tier.prefix).await?);
            tier.heard(sharded::tick(&c, &tier.prefix).await?);
            tier.learned.store(true, SeqCst);
            Ok(())
        }
        Op::Delete { key } => {
            let mut c = connection(client, conn, timeout).await?;
            if tier.sharded.is_some() {
                sharded::drop_value(&c, &key).await?;
            } else {
                let _: () = c.del(&key).await?;
            }
            Ok(())
        }
        Op::Clear { reply } => {
            let mut c = match connection(client, conn, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    reply(None);
                    return Err(e);
                }
            };
            let tick: u64 = scripts
                .clear_tick
                .call()
                .key(format!("{}tick", tier.prefix))
                .key(format!("{}cleared", tier.prefix))
                .invoke(&mut c)
                .await?;
            if let Some(keys) = &tier.sharded {
                // Values from before the mark are misses here from now on
                // (a store that raced the deletion too), and on every node
                // that hears the message or subscribes.
                tier.saw_clear(tick);
                let found = c.scan_primaries(&keys.entry_pattern()).await?;
                futures_util::future::try_join_all(found.iter().map(|key| {
                    let mut c = c.clone();
                    async move { c.del::<_, ()>(key).await }
                }))
                .await?;
                c.publish_sharded(
                    &format!("{}invalidations", tier.prefix),
                    &format!("clear\n{tick}"),
                )
                .await?;
                reply(Some(()));
                return Ok(());
            }
            let pattern = format!("{}e:*", escape_glob(&tier.prefix));
            // SCAN on the node that holds the prefix's slot (all its keys).
            let tick_key = format!("{}tick", tier.prefix);
            let mut keys: Vec<String> = Vec::new();
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let page = c.on_node_of(&tick_key, scan).await?;
                let (next, found): (u64, Vec<String>) = redis::from_redis_value(page)?;
                keys.extend(found);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            for chunk in keys.chunks(500) {
                let _: () = c.del(chunk).await?;
            }
            let _: () = c
                .publish(format!("{}invalidations", tier.prefix), "clear")
                .await?;
            reply(Some(()));
            Ok(())
        }
    }
}

/// Invalidates in Redis (the entries, the generations) and publishes the
/// message (with `ack`, asking every node for an acknowledgement); Redis's
/// tick for it.
async fn invalidate_in_redis(
    c: &mut Connection,
    tier: &Tier,
    scripts: &Scripts,
    objects: &[String],
    kinds: &[String],
    ack: Option<&str>,
) -> redis::RedisResult<u64> {
    let message = message(objects, kinds, ack);
    if let Some(keys) = &tier.sharded {
        let tick = sharded::invalidate(
            c,
            &tier.prefix,
            keys,
            &scripts.sharded,
            objects,
            kinds,
            GENERATION_TTL_SECS,
            message,
        )
        .await?;
        tier.heard(tick);
        return Ok(tick);
    }
    // Keyed by the tick (unused by the script), so that a cluster runs it on
    // the primary holding the prefix's slot.
    let mut invocation = scripts.invalidate.call();
    invocation
        .key(format!("{}tick", tier.prefix))
        .arg(&tier.prefix)
        .arg(message)
        .arg(GENERATION_TTL_SECS)
        .arg(objects.len());
    for o in objects {
        invocation.arg(o);
    }
    for k in kinds {
        invocation.arg(k);
    }
    invocation.invoke(c).await
}

/// A fetch in the sharded layout: the entry (one `GET`), and on a miss the
/// tick a computation starts from.
async fn fetch_sharded(c: &mut Connection, tier: &Tier, key: &str) -> redis::RedisResult<Fetched> {
    let replies: Vec<redis::Value> = redis::pipe()
        .ignore_errors()
        .get(key)
        .query_async(c)
        .await?;
    let entry = replies.into_iter().next().unwrap_or(redis::Value::Nil);
    if let Some(bytes) = sharded_value(c, tier, key, entry).await {
        return Ok(Fetched {
            bytes: Some(bytes),
            since: 0,
            lease: Lease::None,
        });
    }
    let since = since_sharded(c, tier).await?;
    Ok(unleased(since))
}

/// The tick a computation starts from in the sharded layout: the one this
/// node heard of last, else Redis's.
async fn since_sharded(c: &Connection, tier: &Tier) -> redis::RedisResult<u64> {
    match tier.heard_tick() {
        Some(tick) => Ok(tick),
        None => sharded::tick(c, &tier.prefix).await,
    }
}

/// The bytes of a current value read in the sharded layout. A tombstone is
/// none; bad data, or a value computed before a clear, is dropped (unless
/// a tombstone has replaced it since: see [`sharded::DROP_VALUE`]).
async fn sharded_value(
    c: &mut Connection,
    tier: &Tier,
    key: &str,
    entry: redis::Value,
) -> Option<Vec<u8>> {
    let raw = match entry {
        redis::Value::BulkString(raw) => raw,
        redis::Value::Nil => return None,
        other => {
            tracing::warn!(
                key,
                "ultracache: Redis holds something other than an entry \
                 under an entry key ({other:?}); deleted"
            );
            let _: redis::RedisResult<()> = sharded::drop_value(c, key).await;
            return None;
        }
    };
    match sharded::unframe(raw) {
        Held::Value(bytes, since) if since >= tier.cleared() => Some(bytes),
        Held::Nothing => None,
        Held::Value(..) | Held::Bad => {
            let _: redis::RedisResult<()> = sharded::drop_value(c, key).await;
            None
        }
    }
}

/// Invalidates with an acknowledgement token, then waits (until `wait` has
/// passed) for the other nodes that were live before it to acknowledge.
async fn acknowledged(
    c: &mut Connection,
    tier: &Tier,
    scripts: &Scripts,
    objects: &[String],
    kinds: &[String],
    wait: Duration,
) -> redis::RedisResult<Acks> {
    let deadline = tokio::time::Instant::now() + wait;
    // The nodes to wait for: live before the invalidation. A node that
    // subscribes after it holds no copy from before (it drops its L1 when
    // it subscribes after a break; a new node starts empty).
    let nodes: Vec<String> = scripts
        .live_nodes
        .call()
        .key(format!("{}nodes", tier.prefix))
        .arg(LIVE.as_millis() as u64)
        .invoke(c)
        .await?;
    let others: Vec<String> = nodes.into_iter().filter(|n| *n != tier.node).collect();
    let token = format!("{}{:016x}", tier.node, crate::entry::next_id());
    let _tick = invalidate_in_redis(c, tier, scripts, objects, kinds, Some(&token)).await?;
    let set = format!("{}ack:{token}", tier.prefix);
    let started = tokio::time::Instant::now();
    loop {
        // Asked again at once while acknowledgements usually arrive (well
        // under a millisecond on one network: one round trip per ask), then
        // every 2 ms (the timer's granularity is a millisecond).
        let eager = started.elapsed() < Duration::from_millis(5);
        // Another type under the key reads as nobody's acknowledgement.
        let replies: Vec<redis::Value> = redis::pipe()
            .ignore_errors()
            .smembers(&set)
            .query_async(c)
            .await?;
        let acked: Vec<String> = replies
            .into_iter()
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let missing = others.iter().filter(|n| !acked.contains(n)).count();
        let pause = Duration::from_millis(if eager { 0 } else { 2 });
        if missing == 0 || tokio::time::Instant::now() + pause > deadline {
            return Ok(Acks {
                waited_for: others.len(),
                missing,
            });
        }
        if eager {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
}

/// The key of an entry's lease: beside it, in its slot.
/// What a fetch read: the entry (a value of another type under its key is
/// bad data: read as a miss, and `true` to have it deleted) and Redis's tick.
fn fetched(key: &str, entry: redis::Value, tick: redis::Value) -> (Fetched, bool) {
    let (bytes, bad) = match entry {
        redis::Value::BulkString(bytes) => (Some(bytes), false),
        redis::Value::Nil => (None, false),
        other => {
            tracing::warn!(
                key,
                "ultracache: Redis holds something other than an entry \
                 under an entry key ({other:?}); deleted"
            );
            (None, true)
        }
    };
    // A tick that does not read as a number is repaired by the next
    // invalidation; until then a value computed now is offered as of tick 0,
    // which Redis refuses if anything it read was ever invalidated (refusing
    // is the safe side).
    let since = match tick {
        redis::Value::BulkString(t) => std::str::from_utf8(&t)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let fetched = Fetched {
        bytes,
        since,
        lease: Lease::None,
    };
    (fetched, bad)
}

/// The pipeline of a fetch: the entry and the tick, each read on its own (a
/// key holding another type, or garbage under the tick, is bad data, not an
/// outage).
fn fetch_pipeline(prefix: &str, key: &str) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors().get(key).get(format!("{prefix}tick"));
    pipe
}

/// One answer of the fetch-lease script: `None` while another node holds
/// the lease.
fn leased(tier: &Tier, entry: Vec<u8>, tick: &str, taken: i64, token: &str) -> Option<Fetched> {
    let since = tick.parse::<u64>().unwrap_or(0);
    let fetched = |bytes, lease| Fetched {
        bytes,
        since,
        lease,
    };
    if !entry.is_empty() {
        return Some(fetched(Some(entry), Lease::None));
    }
    if taken == 1 {
        tier.counts.leases.fetch_add(1, SeqCst);
        return Some(fetched(None, Lease::Acquired(token.to_owned())));
    }
    None
}

/// How long a node that another node's lease holds back waits between asks.
const LEASE_POLL: Duration = Duration::from_millis(2);

fn lease_key(entry_key: &str) -> String {
    entry_key.replacen("}e:", "}l:", 1)
}

/// How long a lease is held at most: a holder that died stops holding back
/// the others after this.
const LEASE_TTL: Duration = crate::tier::LEASE_WAIT;

/// One fetch that takes the lease on a miss; with `wait`, repeated while
/// another node holds the lease.
async fn fetch_lease(
    c: &mut Connection,
    tier: &Tier,
    key: &str,
    wait: Option<Duration>,
    probed: bool,
) -> redis::RedisResult<Fetched> {
    if tier.sharded.is_none() && !probed {
        // As on a sync caller's thread: a hit is one plain GET (a value
        // found is not computed here, so it needs no tick); a miss, or
        // anything that is not an entry, goes on to the script that takes
        // the lease and reads the tick the computation starts from.
        let (entry,): (redis::Value,) = redis::pipe()
            .ignore_errors()
            .get(key)
            .query_async(c)
            .await?;
        if let redis::Value::BulkString(bytes) = entry {
            return Ok(Fetched {
                bytes: Some(bytes),
                since: 0,
                lease: Lease::None,
            });
        }
    }
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    let token = lease_token(tier);
    loop {
        let mut answer: (Vec<u8>, String, i64) = lease_call(tier, key, &token).invoke(c).await?;
        if tier.sharded.is_some() {
            if answer.0.is_empty() {
                answer.1 = since_sharded(c, tier).await?.to_string();
            } else {
                let entry = redis::Value::BulkString(std::mem::take(&mut answer.0));
                match sharded_value(c, tier, key, entry).await {
                    Some(bytes) => answer.0 = bytes,
                    // Bad, or from before a clear: deleted; asked again.
                    None => continue,
                }
            }
        }
        let waited_out = deadline.map(|d| tokio::time::Instant::now() >= d);
        match lease_answer(tier, answer, &token, waited_out) {
            Some(fetched) => return Ok(fetched),
            None => tokio::time::sleep(LEASE_POLL).await,
        }
    }
}

/// A fetch on the caller's thread, on a blocking connection.
fn fetch_blocking_on(
    c: &mut redis::Connection,
    prefix: &str,
    key: &str,
) -> redis::RedisResult<Fetched> {
    let (entry, tick): (redis::Value, redis::Value) = fetch_pipeline(prefix, key).query(c)?;
    let (fetched, bad) = fetched(key, entry, tick);
    if bad {
        let _: redis::RedisResult<()> = redis::Commands::del(c, key);
    }
    Ok(fetched)
}

/// [`fetch_lease`] on the caller's thread, on a blocking connection.
fn fetch_lease_blocking(
    c: &mut redis::Connection,
    tier: &Tier,
    key: &str,
    wait: Option<Duration>,
) -> redis::RedisResult<Fetched> {
    let deadline = wait.map(|w| std::time::Instant::now() + w);
    let token = lease_token(tier);
    loop {
        let answer = lease_call(tier, key, &token).invoke_blocking(c)?;
        let waited_out = deadline.map(|d| std::time::Instant::now() >= d);
        match lease_answer(tier, answer, &token, waited_out) {
            Some(fetched) => return Ok(fetched),
            None => std::thread::sleep(LEASE_POLL),
        }
    }
}

/// The token a lease taken by this fetch holds.
fn lease_token(tier: &Tier) -> String {
    format!("{}{:016x}", tier.node, crate::entry::next_id())
}

/// The fetch-lease script's call for `key`.
fn lease_call<'a>(tier: &'a Tier, key: &str, token: &str) -> super::connect::LuaCall<'a> {
    let mut call = tier.fetch_lease.call();
    // The sharded layout reads the tick apart (it is in another slot): the
    // script reads an empty key beside the entry instead.
    let (tick, layout) = match tier.sharded {
        Some(_) => (key.replacen("}e:", "}t:", 1), "t"),
        None => (format!("{}tick", tier.prefix), ""),
    };
    call.key(key)
        .key(lease_key(key))
        .key(tick)
        .arg(token)
        .arg(LEASE_TTL.as_millis() as u64)
        .arg(layout);
    call
}

/// What one answer of the fetch-lease script decides: the fetch's result,
/// or `None` to ask again after [`LEASE_POLL`]. `waited_out` is `None` for
/// a fetch that does not wait, else whether its wait is over.
fn lease_answer(
    tier: &Tier,
    (entry, tick, taken): (Vec<u8>, String, i64),
    token: &str,
    waited_out: Option<bool>,
) -> Option<Fetched> {
    if let Some(fetched) = leased(tier, entry, &tick, taken, token) {
        return Some(fetched);
    }
    let since = tick.parse::<u64>().unwrap_or(0);
    match waited_out {
        None => Some(held(since)),
        // Waited long enough: computed here, without the lease.
        Some(true) => Some(unleased(since)),
        Some(false) => {
            tier.counts.lease_waits.fetch_add(1, SeqCst);
            None
        }
    }
}

/// A miss while another node holds the key's lease.
fn held(since: u64) -> Fetched {
    Fetched {
        bytes: None,
        since,
        lease: Lease::Held,
    }
}

/// A miss to compute without the lease.
fn unleased(since: u64) -> Fetched {
    Fetched {
        bytes: None,
        since,
        lease: Lease::None,
    }
}

/// Escapes glob characters in a prefix for SCAN MATCH.
pub(super) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The invalidation messages of one subscription, as they arrive; the
/// stream ends when the subscription breaks.
type Messages = futures_util::stream::LocalBoxStream<'static, String>;

/// Subscribes to the invalidation channel: with `SSUBSCRIBE` on a cluster
/// in the sharded layout (its invalidations are published with `SPUBLISH`),
/// with `SUBSCRIBE` otherwise (through the seed node of this `attempt`).
async fn subscribe(
    backend: &Backend,
    channel: String,
    sharded: bool,
    attempt: usize,
) -> redis::RedisResult<Messages> {
    if sharded && backend.is_cluster() {
        let (pushes, received) = tmpsc::unbounded_channel();
        if let Some(mut c) = backend.shard_subscriber(pushes).await? {
            c.ssubscribe(&channel).await?;
            return Ok(shard_messages(received, c));
        }
    }
    let mut pubsub = backend.subscriber(attempt).get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    Ok(pubsub
        .into_on_message()
        .filter_map(|msg| std::future::ready(msg.get_payload::<String>().ok()))
        .boxed_local())
}

/// The sharded messages among a cluster connection's pushes. The library
/// reconnects and subscribes again by itself after a disconnection, and a
/// node that loses the channel's slot (a resharding) unsubscribes its
/// clients: messages may have been missed either way, so a disconnection
/// or an unsubscription this node did not ask for ends the stream (a
/// break). The connection lives as long as the stream.
fn shard_messages(
    received: tmpsc::UnboundedReceiver<redis::PushInfo>,
    connection: redis::cluster_async::ClusterConnection,
) -> Messages {
    futures_util::stream::unfold(
        (received, connection),
        |(mut received, connection)| async move {
            loop {
                let push = received.recv().await?;
                match push.kind {
                    redis::PushKind::SMessage => {
                        let payload = redis::Msg::from_push_info(push)
                            .and_then(|msg| msg.get_payload::<String>().ok());
                        if let Some(payload) = payload {
                            return Some((payload, (received, connection)));
                        }
                    }
                    redis::PushKind::Disconnection | redis::PushKind::SUnsubscribe => return None,
                    _ => {}
                }
            }
        },
    )
    .boxed_local()
}

/// Listens for invalidations from every node. A break in the subscription
/// drops this node's whole L1 at once and again once it is back.
async fn listen(backend: Backend, tier: std::sync::Weak<Tier>) {
    let mut broken = false;
    let mut attempt = 0usize;
    loop {
        let Some(t) = tier.upgrade() else { return };
        let channel = format!("{}invalidations", t.prefix);
        let timeout = t.timeout;
        let sharded = t.sharded.is_some();
        drop(t);
        let subscribed = subscribe(&backend, channel, sharded, attempt);
        attempt = attempt.wrapping_add(1);
        match tokio::time::timeout(timeout * 4, subscribed).await {
            Ok(Ok(mut messages)) => {
                if broken {
                    if let Some(t) = tier.upgrade() {
                        t.counts.reconnects.fetch_add(1, SeqCst);
                        t.succeeded();
                    }
                    // Invalidations may have been missed: forget everything.
                    crate::invalidation::clear_local();
                }
                if let Some(t) = tier.upgrade() {
                    t.subscribed.store(true, SeqCst);
                    t.send(Op::Heartbeat);
                    if t.sharded.is_some() {
                        t.send(Op::Learn);
                    }
                }
                while let Some(payload) = messages.next().await {
                    if let Some(t) = tier.upgrade() {
                        if let Some(tick) = payload
                            .strip_prefix("clear\n")
                            .and_then(|t| t.parse::<u64>().ok())
                        {
                            t.saw_clear(tick);
                        } else if let Some(tick) = payload.lines().find_map(|l| {
                            l.strip_prefix("!tick ").and_then(|t| t.parse::<u64>().ok())
                        }) {
                            t.heard(tick);
                        }
                    }
                    if let Some(token) = apply(&payload) {
                        // Applied: this node's copies are gone.
                        if let Some(t) = tier.upgrade() {
                            t.send(Op::Ack { token });
                        }
                    }
                }
                drop(messages);
                broken = true;
                if let Some(t) = tier.upgrade() {
                    t.subscribed.store(false, SeqCst);
                    t.learned.store(false, SeqCst);
                }
                // Other nodes' invalidations no longer arrive: what this node
                // holds may already be stale. Dropped now (and again once
                // subscribed, for what was computed meanwhile).
                crate::invalidation::clear_local();
                if let Some(t) = tier.upgrade() {
                    t.failed("subscription", &"connection lost");
                }
            }
            Ok(Err(e)) => {
                broken = true;
                if let Some(t) = tier.upgrade() {
                    t.failed("subscribe", &e);
                }
            }
            Err(_) => {
                broken = true;
                if let Some(t) = tier.upgrade() {
                    t.failed("subscribe", &"timed out");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
