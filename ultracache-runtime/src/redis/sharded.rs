//! The sharded layout of the shared tier: entries, dependency registries and
//! generations each in their own hash slot, so that a Redis Cluster spreads
//! them (and their load) over its primaries. Only the tick (`{prefix}tick`,
//! read on a miss and taken by an invalidation), the clear mark, the node
//! list and the invalidation channel stay under the prefix's own tag.
//!
//! Keys, for prefix `P`:
//! - an entry: `{P/e/<cache>:<hash>}e:` (its lease beside it, `…}l:`);
//! - a dependency `D`: `{P/d/D}g` (its generation: the tick of its last
//!   invalidation) and `{P/d/D}r` (its registry: the keys of the entries that
//!   read it, scored by when they expire);
//! - a kind `K`: `{P/k/K#n}g` and `{P/k/K#n}r` for `n` in 0..16 (the
//!   dependencies of kind `K` that entries read, spread over 16 registries
//!   by their hash so that one busy kind does not load one primary).
//!
//! A script is atomic on one slot only, so the protocol is built from
//! single-slot steps whose order makes it correct:
//!
//! - **Store** (a value computed from reads that began at tick `since`):
//!   1. in each dependency's slot (and each kind's), atomically: refuse if
//!      its generation is above `since`, else add the entry to its registry;
//!   2. in the entry's slot, atomically: refuse if the key holds a tombstone
//!      above `since`, else set the value (framed with `since`).
//! - **Invalidate** (after the write committed):
//!   1. take the next tick `t`;
//!   2. in each kind's slot: raise its generation to `t`, move its registry
//!      (the dependencies of the kind) into its taken set, and read that;
//!   3. in each dependency's slot (written ones and those of the kinds):
//!      raise its generation to `t`, move its registry into its taken set,
//!      and read that;
//!   4. over every entry taken: write a tombstone of `t` (unless a later one
//!      is there), in the entry's slot; then remove what was taken from the
//!      taken sets, publish, and return.
//!
//! Every step is idempotent and what one leaves undone stays in Redis: an
//! invalidation that fails partway (a primary down, a failover) is kept by
//! its node and sent again whole; its taken sets still hold the entries the
//! failed tombstones missed, so the replay kills them.
//!
//! Why no value computed before the write survives an invalidation that
//! returned: a store whose step 1 in a dependency's slot ran after the
//! invalidation's step 3 there (or, for a kind, step 2) saw the raised
//! generation and was refused. One whose step 1 ran before it had its entry
//! in the registry step 3 took, so a tombstone of `t` was written to its key:
//! a step 2 that runs after the tombstone is refused (`since < t`), one that
//! ran before is overwritten by it. A store that registered under a kind
//! before step 2 had its dependency taken from the kind's registry, so step 3
//! runs for that dependency. Every case ends with the key dead before the
//! invalidation returns. A read never needs more than the one `GET` of the
//! entry: the check happens when storing and invalidating, not when reading.
//!
//! A tombstone lives [`TOMBSTONE_TTL`]: a store whose two steps lie further
//! apart than that (a connection stalled for a minute between two commands)
//! could set a value the tombstone would have refused.
//!
//! A miss starts its computation from the last tick its node heard of (each
//! invalidation's message carries its tick), not from a read of the tick's
//! primary: a tick heard was given after its write committed, so the
//! computation reads data at least that new, and a tick behind Redis's only
//! refuses more. Ticks never repeat (see [`NEXT_TICK`]).
//!
//! On a cluster, invalidation messages go by sharded pub/sub: published
//! with `SPUBLISH` on `{P}invalidations` (the tick's slot), heard with
//! `SSUBSCRIBE` on that slot's shard, so a message does not cross the whole
//! cluster bus. A subscription that breaks (a disconnection, or the slot
//! moving away, which unsubscribes its listeners) drops the node's L1, as
//! with a classic subscription.
//!
//! `clear()` marks the key space cleared at a tick (`{P}cleared`) and
//! deletes every entry on every primary; a value framed with a `since` below
//! the mark is a miss on every node that knows the mark (the node that
//! cleared, every node hearing the message, every node subscribing), which
//! covers a store that raced the deletion.

use futures_util::future::try_join_all;

use super::connect::{Connection, Lua};

/// How long a tombstone keeps refusing a store that registered before its
/// invalidation.
pub(super) const TOMBSTONE_TTL_MS: u64 = 60_000;

/// Step 1 of a store, in one dependency's (or kind's) slot.
/// KEYS: generation, registry. ARGV: since, ttl in ms (0: none), members…
/// Returns 1 when registered, 0 when refused.
pub(super) const REGISTER: &str = r"
local since = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
-- A generation that is not a number (or not a string) is unknown: it may
-- be newer than anything, so the value is refused.
local g = redis.pcall('GET', KEYS[1])
if type(g) == 'table' then return 0 end
if g then
  local n = tonumber(g)
  if (not n) or n > since then return 0 end
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local score = '+inf'
if ttl > 0 then score = ms + ttl end
local existed = redis.call('EXISTS', KEYS[2])
for i = 3, #ARGV do
  if type(redis.pcall('ZADD', KEYS[2], 'GT', score, ARGV[i])) == 'table' then
    -- Not a sorted set (damaged): replaced by one.
    redis.call('DEL', KEYS[2])
    existed = 0
    redis.call('ZADD', KEYS[2], score, ARGV[i])
  end
end
-- Members whose entries have expired are pruned: a registry holds the
-- entries that may still be alive.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ms)
-- A registry never expires before an entry it guards.
if ttl == 0 then
  redis.call('PERSIST', KEYS[2])
elseif existed == 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  local current = redis.call('PTTL', KEYS[2])
  if current >= 0 and current < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return 1
";

/// Steps 2 and 3 of an invalidation, in one dependency's (or kind's) slot.
/// KEYS: generation, registry, taken. ARGV: tick, generation TTL in seconds.
///
/// The registry's members move to the taken set (scored by the highest
/// tick that took them) rather than vanish: an invalidation that fails
/// before every member is dead leaves them there, and its replay (or any
/// later invalidation) takes them again. Returns every member of the taken
/// set; [`UNTAKE`] removes them once dead.
pub(super) const TAKE: &str = r"
local t = tonumber(ARGV[1])
local g = redis.pcall('GET', KEYS[1])
local n = nil
if type(g) == 'string' then n = tonumber(g) end
if (not n) or n < t then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
end
local members = redis.pcall('ZRANGE', KEYS[2], 0, -1)
if type(members) == 'table' and members.err then members = {} end
for _, m in ipairs(members) do
  if type(redis.pcall('ZADD', KEYS[3], 'GT', t, m)) == 'table' then
    -- Not a sorted set (damaged): replaced by one.
    redis.call('DEL', KEYS[3])
    redis.call('ZADD', KEYS[3], t, m)
  end
end
redis.call('DEL', KEYS[2])
local taken = redis.pcall('ZRANGE', KEYS[3], 0, -1)
if type(taken) == 'table' and taken.err then return members end
return taken
";

/// After step 4: members taken at a tick no later than ARGV[1] are dead
/// and leave the taken set (one taken again by a later invalidation stays
/// for it). KEYS: taken. ARGV: tick, members…
pub(super) const UNTAKE: &str = r"
local t = tonumber(ARGV[1])
for i = 2, #ARGV do
  local score = redis.pcall('ZSCORE', KEYS[1], ARGV[i])
  if type(score) == 'string' and tonumber(score) <= t then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 1
";

/// Step 2 of a store, in the entry's slot. KEYS: entry, lease. ARGV: value,
/// ttl in ms (0: none), since, lease token ('' for none). 1 when stored.
pub(super) const PUT: &str = r"
local function release()
  if ARGV[4] ~= '' and redis.pcall('GET', KEYS[2]) == ARGV[4] then
    redis.call('DEL', KEYS[2])
  end
end
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'string' and string.sub(current, 1, 1) == 'T' then
  local t = tonumber(string.sub(current, 2))
  if (not t) or t > tonumber(ARGV[3]) then release() return 0 end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
release()
return 1
";

/// Step 4 of an invalidation, in the entry's slot. KEYS: entry. ARGV: tick,
/// tombstone TTL in ms.
pub(super) const TOMBSTONE: &str = r"
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'string' and string.sub(current, 1, 1) == 'T' then
  local t = tonumber(string.sub(current, 2))
  if t and t >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], 'T' .. ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
";

/// Deletes what an entry key holds unless it is a tombstone. KEYS: entry.
///
/// A reader that found bad bytes (or a value from before a clear) drops
/// them with this rather than `DEL`: an invalidation may have written a
/// tombstone over them since the read, and deleting that tombstone would let
/// a store that registered before the invalidation set its stale value.
pub(super) const DROP_VALUE: &str = r"
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'string' and string.sub(current, 1, 1) == 'T' then return 0 end
return redis.call('DEL', KEYS[1])
";

/// Step 1 of an invalidation: the next tick, never below the clock in
/// microseconds. KEYS: the tick.
///
/// Nodes start computations from the last tick they heard of, so a tick
/// must never be given twice: a Redis that restarted empty, or a replica
/// promoted without the last increments it had not received, starts again
/// from its clock — which has passed every tick given before, since those
/// were at most the clock when given (plus one per invalidation made within
/// a microsecond) and a failover takes longer than the clocks of two
/// primaries drift apart.
pub(super) const NEXT_TICK: &str = r"
local now = redis.call('TIME')
local tick = tonumber(now[1]) * 1000000 + tonumber(now[2])
local stored = redis.pcall('GET', KEYS[1])
local n = nil
if type(stored) == 'string' then n = tonumber(stored) end
if n and n + 1 > tick then tick = n + 1 end
redis.call('SET', KEYS[1], string.format('%.0f', tick))
return string.format('%.0f', tick)
";

/// How many registries a kind's dependencies are spread over (each in a
/// slot of its own): storing registers in one, invalidating the whole kind
/// takes them all.
const KIND_SHARDS: u64 = 16;

/// The sharded layout's scripts.
pub(super) struct Scripts {
    register: Lua,
    take: Lua,
    untake: Lua,
    put: Lua,
    tombstone: Lua,
    next_tick: Lua,
    release: Lua,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            register: Lua::new(REGISTER),
            take: Lua::new(TAKE),
            untake: Lua::new(UNTAKE),
            put: Lua::new(PUT),
            tombstone: Lua::new(TOMBSTONE),
            next_tick: Lua::new(NEXT_TICK),
            release: Lua::new(super::tier::RELEASE),
        }
    }
}

/// The sharded layout's keys for a prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    raw: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            raw: prefix.to_owned(),
        }
    }

    pub(super) fn entry(&self, cache: &str, key_hash: u64) -> String {
        format!("{{{}/e/{cache}:{key_hash:016x}}}e:", self.raw)
    }

    /// The SCAN pattern of every entry key (tombstones too).
    pub(super) fn entry_pattern(&self) -> String {
        format!("{{{}/e/*", super::tier::escape_glob(&self.raw))
    }

    /// A dependency's generation, registry and taken set.
    fn dep(&self, dep: &str) -> [String; 3] {
        let tag = format!("{{{}/d/{dep}}}", self.raw);
        [format!("{tag}g"), format!("{tag}r"), format!("{tag}x")]
    }

    /// One of a kind's generations, registries and taken sets.
    fn kind(&self, kind: &str, shard: u64) -> [String; 3] {
        let tag = format!("{{{}/k/{kind}#{shard}}}", self.raw);
        [format!("{tag}g"), format!("{tag}r"), format!("{tag}x")]
    }
}

/// The registry of its kind a dependency registers in.
fn kind_shard(dep: &str) -> u64 {
    crate::tier::codec::hash(dep.as_bytes()) % KIND_SHARDS
}

/// The kind of a dependency as the tier names it (`kind:id` or `kind`).
pub(super) fn kind_of(dep: &str) -> &str {
    match dep.rsplit_once(':') {
        Some((kind, id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => kind,
        _ => dep,
    }
}

/// A stored value: `V`, the tick its computation started at, the bytes.
pub(super) fn frame(bytes: &[u8], since: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 9);
    out.push(b'V');
    out.extend_from_slice(&since.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// What an entry key holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// A value (its bytes) computed from reads that began at this tick.
    Value(Vec<u8>, u64),
    /// Nothing, or a tombstone.
    Nothing,
    /// Bytes that are neither: bad data, to delete.
    Bad,
}

/// Reads what an entry key holds.
pub(super) fn unframe(mut raw: Vec<u8>) -> Held {
    match raw.first() {
        Some(b'T') => Held::Nothing,
        Some(b'V') if raw.len() >= 9 => {
            let mut since = [0u8; 8];
            since.copy_from_slice(&raw[1..9]);
            raw.drain(..9);
            Held::Value(raw, u64::from_be_bytes(since))
        }
        _ => Held::Bad,
    }
}

/// Stores a framed value unless something it read was invalidated after
/// `since`: `Ok(true)` when stored. The lease `(key, token)` is freed either
/// way.
#[allow(clippy::too_many_arguments)]
pub(super) async fn store(
    c: &Connection,
    keys: &Keys,
    scripts: &Scripts,
    key: &str,
    lease: (&str, &str),
    framed: Vec<u8>,
    ttl_ms: u64,
    since: u64,
    deps: &[String],
) -> redis::RedisResult<bool> {
    // Step 1, every slot at once: each dependency registers the entry, each
    // kind registers its dependencies.
    let mut kinds: Vec<((&str, u64), Vec<&str>)> = Vec::new();
    for d in deps {
        let k = (kind_of(d), kind_shard(d));
        match kinds.iter_mut().find(|(kind, _)| *kind == k) {
            Some((_, members)) => members.push(d),
            None => kinds.push((k, vec![d])),
        }
    }
    let mut steps = Vec::with_capacity(deps.len() + kinds.len());
    for d in deps {
        let [generation, registry, _] = keys.dep(d);
        let mut call = scripts.register.call();
        call.key(generation)
            .key(registry)
            .arg(since)
            .arg(ttl_ms)
            .arg(key);
        steps.push(call);
    }
    for ((kind, shard), members) in &kinds {
        let [generation, registry, _] = keys.kind(kind, *shard);
        let mut call = scripts.register.call();
        call.key(generation).key(registry).arg(since).arg(ttl_ms);
        for m in members {
            call.arg(*m);
        }
        steps.push(call);
    }
    let registered: Vec<i64> = try_join_all(steps.iter().map(|call| {
        let mut c = c.clone();
        async move { call.invoke::<i64>(&mut c).await }
    }))
    .await?;
    let mut c = c.clone();
    if registered.iter().any(|r| *r != 1) {
        // Refused: only the lease to free.
        if !lease.1.is_empty() {
            let _: i64 = scripts
                .release
                .call()
                .key(lease.0)
                .arg(lease.1)
                .invoke(&mut c)
                .await?;
        }
        return Ok(false);
    }
    let mut put = scripts.put.call();
    put.key(key)
        .key(lease.0)
        .arg(framed)
        .arg(ttl_ms)
        .arg(since)
        .arg(lease.1);
    let stored: i64 = put.invoke(&mut c).await?;
    Ok(stored == 1)
}

/// Invalidates `objects` and whole `kinds`: every entry that read them is
/// dead when this returns `Ok(tick)`; `message` is published last.
#[allow(clippy::too_many_arguments)]
pub(super) async fn invalidate(
    c: &Connection,
    prefix: &str,
    keys: &Keys,
    scripts: &Scripts,
    objects: &[String],
    kinds: &[String],
    generation_ttl_secs: u64,
    message: String,
) -> redis::RedisResult<u64> {
    let tick: u64 = {
        let mut c = c.clone();
        scripts
            .next_tick
            .call()
            .key(format!("{prefix}tick"))
            .invoke(&mut c)
            .await?
    };
    let take = |[generation, registry, taken]: [String; 3]| {
        let mut call = scripts.take.call();
        call.key(generation)
            .key(registry)
            .key(taken)
            .arg(tick)
            .arg(generation_ttl_secs);
        call
    };
    // Step 2: the kinds give the dependencies of theirs that entries read.
    let kind_sets: Vec<[String; 3]> = kinds
        .iter()
        .flat_map(|k| (0..KIND_SHARDS).map(move |shard| keys.kind(k, shard)))
        .collect();
    let kind_calls: Vec<_> = kind_sets.iter().cloned().map(take).collect();
    let of_kinds = take_all(c, &kind_calls).await?;
    let mut deps: Vec<&str> = objects.iter().map(String::as_str).collect();
    for d in of_kinds.iter().flatten() {
        if !deps.contains(&d.as_str()) {
            deps.push(d);
        }
    }
    // Step 3: the dependencies give their entries.
    let dep_sets: Vec<[String; 3]> = deps.iter().map(|d| keys.dep(d)).collect();
    let dep_calls: Vec<_> = dep_sets.iter().cloned().map(take).collect();
    let taken = take_all(c, &dep_calls).await?;
    let mut entries: Vec<&str> = taken.iter().flatten().map(String::as_str).collect();
    entries.sort_unstable();
    entries.dedup();
    // Step 4: every entry dead. Until this has landed everywhere, what was
    // taken stays in the taken sets, for the replay.
    let tombstones: Vec<_> = entries
        .iter()
        .map(|e| {
            let mut call = scripts.tombstone.call();
            call.key(*e).arg(tick).arg(TOMBSTONE_TTL_MS);
            call
        })
        .collect();
    try_join_all(tombstones.iter().map(|call| {
        let mut c = c.clone();
        async move { call.invoke::<i64>(&mut c).await }
    }))
    .await?;
    // The dead leave the taken sets: the dependencies' entries first, then
    // the kinds' dependencies (whose entries are dead now).
    untake(c, scripts, tick, &dep_sets, &taken).await?;
    untake(c, scripts, tick, &kind_sets, &of_kinds).await?;
    let mut c = c.clone();
    // The tick rides along: nodes start their computations from it.
    let message = format!("{message}\n!tick {tick}");
    c.publish_sharded(&format!("{prefix}invalidations"), &message)
        .await?;
    Ok(tick)
}

/// Removes what an invalidation at `tick` took (and killed) from each taken
/// set, at once.
async fn untake(
    c: &Connection,
    scripts: &Scripts,
    tick: u64,
    sets: &[[String; 3]],
    members: &[Vec<String>],
) -> redis::RedisResult<()> {
    let calls: Vec<_> = sets
        .iter()
        .zip(members)
        .filter(|(_, m)| !m.is_empty())
        .map(|([_, _, taken], m)| {
            let mut call = scripts.untake.call();
            call.key(taken).arg(tick);
            for member in m {
                call.arg(member);
            }
            call
        })
        .collect();
    try_join_all(calls.iter().map(|call| {
        let mut c = c.clone();
        async move { call.invoke::<i64>(&mut c).await }
    }))
    .await?;
    Ok(())
}

/// The tick computations start from (read on a miss).
pub(super) async fn tick(c: &Connection, prefix: &str) -> redis::RedisResult<u64> {
    // Garbage under the tick is repaired by the next invalidation; until
    // then a value computed now is offered as of tick 0 (refused if anything
    // it read was ever invalidated: the safe side).
    number(c, format!("{prefix}tick")).await
}

/// The clear mark (`0` when never cleared, or unreadable: the next clear
/// repairs it).
pub(super) async fn cleared(c: &Connection, prefix: &str) -> redis::RedisResult<u64> {
    number(c, format!("{prefix}cleared")).await
}

/// Drops what an entry key holds unless it is a tombstone (see
/// [`DROP_VALUE`]).
pub(super) async fn drop_value(c: &Connection, key: &str) -> redis::RedisResult<()> {
    static SCRIPT: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new(DROP_VALUE));
    let mut c = c.clone();
    SCRIPT.call().key(key).invoke::<i64>(&mut c).await?;
    Ok(())
}

/// A number under `key`; `0` for none, or for anything else there (another
/// type is bad data, not an outage).
async fn number(c: &Connection, key: String) -> redis::RedisResult<u64> {
    let mut c = c.clone();
    let replies: Vec<redis::Value> = redis::pipe()
        .ignore_errors()
        .get(key)
        .query_async(&mut c)
        .await?;
    Ok(match replies.into_iter().next() {
        Some(redis::Value::BulkString(t)) => std::str::from_utf8(&t)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        _ => 0,
    })
}

/// Runs `TAKE` calls at once: each registry's members.
async fn take_all(
    c: &Connection,
    calls: &[super::connect::LuaCall<'_>],
) -> redis::RedisResult<Vec<Vec<String>>> {
    try_join_all(calls.iter().map(|call| {
        let mut c = c.clone();
        async move { call.invoke::<Vec<String>>(&mut c).await }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn kinds_of_dependencies() {
        assert_eq!(kind_of("blog.post:42"), "blog.post");
        assert_eq!(kind_of("blog.post"), "blog.post");
        assert_eq!(kind_of("app::models::Post:7"), "app::models::Post");
        assert_eq!(kind_of("app::models::Post"), "app::models::Post");
        assert_eq!(kind_of("x:"), "x:");
    }

    #[test]
    fn frames_read_back() {
        assert_eq!(unframe(frame(b"abc", 77)), Held::Value(b"abc".to_vec(), 77));
        assert_eq!(unframe(frame(b"", 0)), Held::Value(Vec::new(), 0));
        assert_eq!(unframe(b"T123".to_vec()), Held::Nothing);
        assert_eq!(unframe(b"V1234567".to_vec()), Held::Bad);
        assert_eq!(unframe(b"garbage".to_vec()), Held::Bad);
        assert_eq!(unframe(Vec::new()), Held::Bad);
    }

    /// The hash tag Redis Cluster hashes for a key.
    fn tag(key: &str) -> &str {
        let open = key.find('{').expect("a tag");
        let close = open + key[open..].find('}').expect("a closed tag");
        &key[open + 1..close]
    }

    #[test]
    fn keys_of_one_dependency_share_a_slot_and_entries_do_not() {
        let keys = Keys::new("p");
        let [g, r, x] = keys.dep("blog.post:1");
        assert_eq!(tag(&g), tag(&r));
        assert_eq!(tag(&g), tag(&x));
        let e1 = keys.entry("c", 1);
        let e2 = keys.entry("c", 2);
        assert_ne!(tag(&e1), tag(&e2));
        assert!(e1.contains("}e:"), "the lease key is made from it");
    }

    /// A reader dropping bad bytes never drops a tombstone an invalidation
    /// wrote over them since its read (the store it refuses would be
    /// stale). Against the Redis on 127.0.0.1:6379; skipped loudly without
    /// it, failed in CI.
    #[test]
    fn dropping_a_bad_value_keeps_a_tombstone() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let target = super::super::connect::Target::Url("redis://127.0.0.1:6379".into());
            let backend = super::super::connect::Backend::open(&target, Duration::from_secs(2))
                .expect("a client");
            let c = match tokio::time::timeout(Duration::from_secs(2), backend.connect()).await {
                Ok(Ok(c)) => c,
                _ if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("CI=true: Redis on 127.0.0.1:6379 is needed")
                }
                _ => {
                    eprintln!("SKIPPED: no Redis on 127.0.0.1:6379");
                    return;
                }
            };
            let key = format!("{{drop-value-{}}}e:", std::process::id());
            let held = |raw: redis::Value| {
                let mut c = c.clone();
                let key = key.clone();
                async move {
                    let _: () = redis::cmd("DEL")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    if let redis::Value::BulkString(bytes) = raw {
                        let _: () = redis::cmd("SET")
                            .arg(&key)
                            .arg(bytes)
                            .query_async(&mut c)
                            .await
                            .unwrap();
                    } else {
                        let _: () = redis::cmd("HSET")
                            .arg(&key)
                            .arg("f")
                            .arg("v")
                            .query_async(&mut c)
                            .await
                            .unwrap();
                    }
                    drop_value(&c, &key).await.unwrap();
                    let left: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                        .unwrap_or(None);
                    let exists: i64 = redis::cmd("EXISTS")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    (exists, left)
                }
            };
            let tomb = redis::Value::BulkString(b"T42".to_vec());
            assert_eq!(held(tomb).await, (1, Some(b"T42".to_vec())), "kept");
            let bad = redis::Value::BulkString(b"garbage".to_vec());
            assert_eq!(held(bad).await, (0, None), "bad bytes dropped");
            let old = redis::Value::BulkString(frame(b"old", 1));
            assert_eq!(held(old).await, (0, None), "a value dropped");
            assert_eq!(held(redis::Value::Nil).await, (0, None), "a hash dropped");
        });
    }
}
