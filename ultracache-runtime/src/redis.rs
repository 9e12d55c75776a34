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
//! - Keys: every key starts with `{prefix}` — one hash tag, so each script's keys
//!   share a slot on Redis Cluster and Valkey (atomicity holds per prefix; the
//!   prefix's keys live on one shard).
//!
//! Values that go to Redis need `serde::Serialize` and `Deserialize` (and keys
//! `Serialize`); a shared cache of another value type does not compile.

mod codec;
mod tier;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dep::Dep;

pub(crate) use tier::{Fetched, Tier, DEFAULT_TIMEOUT};

/// Encodes an entry: fingerprint, key bytes, dependencies, value.
type Encode<V> = fn(u64, &[u8], &[Dep], &V) -> Option<Vec<u8>>;
/// Decodes an entry for this fingerprint and key bytes.
type Decode<V> = fn(u64, &[u8], &[u8]) -> Option<(V, Vec<Dep>)>;

/// How a shared cache turns its keys and values into bytes.
pub(crate) struct Codec<K, V> {
    pub(crate) key: fn(&K) -> Option<Vec<u8>>,
    pub(crate) encode: Encode<V>,
    pub(crate) decode: Decode<V>,
    pub(crate) fingerprint: fn() -> u64,
}

impl<K, V> Clone for Codec<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Codec<K, V> {}

fn key_bytes<K: Serialize>(key: &K) -> Option<Vec<u8>> {
    postcard::to_stdvec(key).ok()
}

impl<K: Serialize, V: Serialize + DeserializeOwned + 'static> Codec<K, V> {
    pub(crate) const fn new() -> Self {
        Codec {
            key: key_bytes::<K>,
            encode: codec::encode::<V>,
            decode: codec::decode::<V>,
            fingerprint: codec::fingerprint::<V>,
        }
    }

    /// The codec with the fingerprint of `T`: for values that are `T`'s bytes.
    pub(crate) const fn fingerprint_of<T: Serialize + DeserializeOwned + 'static>(
        mut self,
    ) -> Self {
        self.fingerprint = codec::fingerprint::<T>;
        self
    }
}

/// A shared cache's link to the tier.
pub(crate) struct Shared<K, V> {
    pub(crate) tier: std::sync::Arc<Tier>,
    pub(crate) codec: Codec<K, V>,
    pub(crate) fingerprint: u64,
    pub(crate) name: &'static str,
    pub(crate) timeout: Option<Duration>,
}

/// What the shared tier had for a key.
pub(crate) enum Found<V> {
    /// A value and what it was computed from.
    Hit(V, Vec<Dep>),
    /// Nothing (or nothing usable): compute, then store with this tick.
    Miss { since: u64 },
    /// Redis is not reachable: compute, store nothing.
    Unavailable,
}

impl<K, V> Shared<K, V> {
    fn entry_key(&self, key: &K) -> Option<(String, Vec<u8>)> {
        let bytes = (self.codec.key)(key)?;
        Some((self.tier.entry_key(self.name, &bytes), bytes))
    }

    fn found(&self, redis_key: String, key_bytes: &[u8], fetched: Option<Fetched>) -> Found<V> {
        let Some(fetched) = fetched else {
            return Found::Unavailable;
        };
        let Some(bytes) = fetched.bytes else {
            return Found::Miss {
                since: fetched.since,
            };
        };
        match (self.codec.decode)(self.fingerprint, key_bytes, &bytes) {
            Some((value, deps)) => Found::Hit(value, deps),
            None => {
                // Garbage, a truncated write or another type: a miss, removed.
                self.tier.delete(redis_key);
                Found::Miss {
                    since: fetched.since,
                }
            }
        }
    }

    pub(crate) fn fetch_blocking(&self, key: &K) -> Found<V> {
        let Some((redis_key, bytes)) = self.entry_key(key) else {
            return Found::Unavailable;
        };
        let fetched = self.tier.fetch_blocking(redis_key.clone());
        self.found(redis_key, &bytes, fetched)
    }

    pub(crate) async fn fetch(&self, key: &K) -> Found<V> {
        let Some((redis_key, bytes)) = self.entry_key(key) else {
            return Found::Unavailable;
        };
        let fetched = self.tier.fetch(redis_key.clone()).await;
        self.found(redis_key, &bytes, fetched)
    }

    pub(crate) fn store(&self, key: &K, value: &V, deps: &[Dep], since: u64) {
        let Some((redis_key, key_bytes)) = self.entry_key(key) else {
            return;
        };
        if let Some(bytes) = (self.codec.encode)(self.fingerprint, &key_bytes, deps, value) {
            self.tier.store(redis_key, bytes, self.timeout, deps, since);
        }
    }

    /// Stores a value written (not computed) unless one of `deps` was
    /// invalidated after Redis's tick `since`; waits for Redis's answer.
    pub(crate) fn store_now(&self, key: &K, value: &V, deps: &[Dep], since: u64) -> Option<bool> {
        let (redis_key, bytes) = self.written(key, value, deps)?;
        self.tier
            .store_now(redis_key, bytes, self.timeout, deps, since)
    }

    /// The async form of [`store_now`](Self::store_now).
    pub(crate) async fn store_now_async(
        &self,
        key: &K,
        value: &V,
        deps: &[Dep],
        since: u64,
    ) -> Option<bool> {
        let (redis_key, bytes) = self.written(key, value, deps)?;
        self.tier
            .store_now_async(redis_key, bytes, self.timeout, deps, since)
            .await
    }

    /// Deletes the entry for `key` in Redis.
    pub(crate) fn delete(&self, key: &K) {
        if let Some((redis_key, _)) = self.entry_key(key) {
            self.tier.delete(redis_key);
        }
    }

    /// The Redis key and the bytes of a written value.
    fn written(&self, key: &K, value: &V, deps: &[Dep]) -> Option<(String, Vec<u8>)> {
        let (redis_key, key_bytes) = self.entry_key(key)?;
        let bytes = (self.codec.encode)(self.fingerprint, &key_bytes, deps, value)?;
        Some((redis_key, bytes))
    }
}

/// Statistics of the shared tier (this node's view).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// Whether a tier is configured.
    pub configured: bool,
    /// Failed or timed-out calls.
    pub errors: u64,
    /// Values Redis accepted.
    pub stores: u64,
    /// Values Redis refused: something they read was invalidated (on any
    /// node) while they were computed.
    pub refused: u64,
    /// Times the invalidation subscription came back after a break (each
    /// dropped this node's L1).
    pub reconnects: u64,
}

/// This node's view of the shared tier.
pub fn tier_stats() -> TierStats {
    use std::sync::atomic::Ordering::SeqCst;
    match crate::runtime::get().tier() {
        Some(t) => TierStats {
            configured: true,
            errors: t.counts.errors.load(SeqCst),
            stores: t.counts.stores.load(SeqCst),
            refused: t.counts.refused.load(SeqCst),
            reconnects: t.counts.reconnects.load(SeqCst),
        },
        None => TierStats::default(),
    }
}
