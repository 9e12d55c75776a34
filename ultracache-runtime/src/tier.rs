//! The shared tier: one store that every node of a site reads and writes
//! behind its in-process caches (Redis, or the in-process [`MemoryTier`] for
//! tests). The core names only the [`SharedTier`] trait; a backend is
//! chosen from the configuration by the [`Backend`]s registered at link time
//! (the Redis one: `Config::redis` or `ULTRACACHE_REDIS_URL`), or given to
//! the configuration directly ([`Config::memory_tier`](crate::Config::memory_tier)).
//!
//! - [`codec`]: how keys and values become bytes (with a type fingerprint);
//! - [`Shared`]: one cache's link to the tier;
//! - [`memory`]: the in-process backend.

pub(crate) mod codec;
mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dep::{Dep, Kind};

pub use memory::MemoryTier;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store shared by every node, with its own dependency registry and
/// invalidation tick, that tells every node of each invalidation. Every call
/// fails open: `None` means "could not be asked", and the caller computes.
pub(crate) trait SharedTier: Send + Sync {
    /// The key of `cache`'s entry with these key bytes.
    fn entry_key(&self, cache: &str, key: &[u8]) -> String;
    /// An entry's bytes (blocking at most the tier's timeout).
    fn fetch_blocking(&self, key: String) -> Option<Fetched>;
    /// An entry's bytes, without blocking a thread.
    fn fetch(&self, key: String) -> BoxFuture<'_, Option<Fetched>>;
    /// Stores a computed entry in the background, unless one of `deps` was
    /// invalidated after the tier's tick `since`.
    fn store(&self, key: String, bytes: Vec<u8>, ttl: Option<Duration>, deps: &[Dep], since: u64);
    /// Stores a written entry unless one of `deps` was invalidated after
    /// `since`, and waits for the answer.
    fn store_now(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
    ) -> Option<bool>;
    /// The async form of [`store_now`](Self::store_now).
    fn store_now_async<'a>(
        &'a self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &'a [Dep],
        since: u64,
    ) -> BoxFuture<'a, Option<bool>>;
    /// Deletes an entry (bytes found unreadable).
    fn delete(&self, key: String);
    /// Invalidates `deps` and whole `kinds` in the tier and on every node;
    /// the tier's tick for it, when it took it.
    fn invalidate(&self, deps: &[Dep], kinds: &[Kind]) -> Option<u64>;
    /// The async form of [`invalidate`](Self::invalidate).
    fn invalidate_async<'a>(
        &'a self,
        deps: &'a [Dep],
        kinds: &'a [Kind],
    ) -> BoxFuture<'a, Option<u64>>;
    /// The async form of [`invalidate_acknowledged`](Self::invalidate_acknowledged).
    fn invalidate_acknowledged_async<'a>(
        &'a self,
        deps: &'a [Dep],
        kinds: &'a [Kind],
        wait: Duration,
    ) -> BoxFuture<'a, Option<(usize, usize)>> {
        let _ = wait;
        Box::pin(async move { self.invalidate_async(deps, kinds).await.map(|_| (0, 0)) })
    }
    /// [`invalidate`](Self::invalidate), then waits (at most `wait`) until
    /// every other live node has applied it: how many other nodes were
    /// waited for, and how many had not applied it when the wait ended.
    /// `None`: the tier could not be asked.
    fn invalidate_acknowledged(
        &self,
        deps: &[Dep],
        kinds: &[Kind],
        wait: Duration,
    ) -> Option<(usize, usize)> {
        let _ = wait;
        self.invalidate(deps, kinds).map(|_| (0, 0))
    }
    /// [`fetch_blocking`](Self::fetch_blocking) for a caller about to compute
    /// on a miss: it also asks for the key's lease, so that one node of the
    /// cluster computes a key that misses everywhere at once.
    fn lease_blocking(&self, key: String) -> Option<Fetched> {
        self.fetch_blocking(key)
    }
    /// The async form of [`lease_blocking`](Self::lease_blocking).
    fn lease(&self, key: String) -> BoxFuture<'_, Option<Fetched>> {
        self.fetch(key)
    }
    /// Waits (at most `wait`) while another node holds the key's lease: the
    /// entry once it is stored, or the lease once it is free.
    fn await_entry_blocking(&self, key: String, wait: Duration) -> Option<Fetched> {
        let _ = wait;
        self.lease_blocking(key)
    }
    /// The async form of [`await_entry_blocking`](Self::await_entry_blocking).
    fn await_entry(&self, key: String, wait: Duration) -> BoxFuture<'_, Option<Fetched>> {
        let _ = wait;
        self.lease(key)
    }
    /// [`store`](Self::store), then frees the lease `token` holds (in one step:
    /// nodes waiting for the lease find the entry).
    fn store_leased(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
        token: String,
    ) {
        let _ = token;
        self.store(key, bytes, ttl, deps, since);
    }
    /// Frees the lease `token` holds on `key`'s entry (its computation stored
    /// nothing).
    fn release(&self, key: String, token: String) {
        let _ = (key, token);
    }
    /// Drops every entry, on every node.
    fn clear(&self);
    /// What it did so far.
    fn stats(&self) -> TierStats;
}

/// How long a node waits for the entry of a key another node holds the
/// lease of, before it computes the key itself (the lease itself lasts as
/// long, so a holder that died stops holding back the others).
pub(crate) const LEASE_WAIT: Duration = Duration::from_secs(5);

/// A lease this node holds: freed when dropped unused (the computation
/// failed, panicked or was cancelled), so the nodes waiting compute.
pub(crate) struct LeaseGuard {
    tier: Arc<dyn SharedTier>,
    key: String,
    token: Option<String>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.tier.release(std::mem::take(&mut self.key), token);
        }
    }
}

/// An entry's bytes, if the tier has them, and the invalidation tick they
/// were read at (a value computed after a miss stores only if nothing it
/// read was invalidated since).
pub(crate) struct Fetched {
    pub(crate) bytes: Option<Vec<u8>>,
    pub(crate) since: u64,
    /// On a miss: whether this node now holds the key's lease.
    pub(crate) lease: Lease,
}

/// A key's lease: one node computes a key that misses on many at once.
#[derive(Debug, Default)]
pub(crate) enum Lease {
    /// Not asked for, or not to be had (computing without one).
    #[default]
    None,
    /// This node holds it: compute, then store (which frees it).
    Acquired(String),
    /// Another node holds it: wait for its entry.
    Held,
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
    /// Keys this node computed for the cluster under their lease (they
    /// missed everywhere; other nodes waited for this one's value).
    pub leases: u64,
    /// Times this node asked again for a key whose lease another node held.
    pub lease_waits: u64,
}

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
    pub(crate) tier: Arc<dyn SharedTier>,
    pub(crate) codec: Codec<K, V>,
    pub(crate) fingerprint: u64,
    pub(crate) name: &'static str,
    pub(crate) timeout: Option<Duration>,
}

/// What the shared tier had for a key.
pub(crate) enum Found<V> {
    /// A value and what it was computed from.
    Hit(V, Vec<Dep>),
    /// Nothing (or nothing usable): compute, then store with this tick (and
    /// free the lease, when this node holds it).
    Miss {
        since: u64,
        lease: Option<LeaseGuard>,
    },
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
        let lease = match fetched.lease {
            Lease::Acquired(token) => Some(LeaseGuard {
                tier: Arc::clone(&self.tier),
                key: redis_key.clone(),
                token: Some(token),
            }),
            _ => None,
        };
        let Some(bytes) = fetched.bytes else {
            return Found::Miss {
                since: fetched.since,
                lease,
            };
        };
        match (self.codec.decode)(self.fingerprint, key_bytes, &bytes) {
            // Held by a commit about to be applied (SQLite's commit hook):
            // this copy may be what the commit replaces.
            Some((_, deps)) if crate::versions::versions().held(&deps) => Found::Miss {
                since: fetched.since,
                lease,
            },
            Some((value, deps)) => Found::Hit(value, deps),
            None => {
                // Garbage, a truncated write or another type: a miss, removed.
                self.tier.delete(redis_key);
                Found::Miss {
                    since: fetched.since,
                    lease,
                }
            }
        }
    }

    pub(crate) async fn fetch(&self, key: &K) -> Found<V> {
        let Some((redis_key, bytes)) = self.entry_key(key) else {
            return Found::Unavailable;
        };
        let fetched = self.tier.fetch(redis_key.clone()).await;
        self.found(redis_key, &bytes, fetched)
    }

    /// The entry for a caller about to compute `key`: a hit, or a miss with
    /// the key's lease when this node is to compute it; while another node
    /// holds the lease, waits (bounded) for its entry.
    pub(crate) fn fetch_to_compute_blocking(&self, key: &K) -> Found<V> {
        let Some((redis_key, bytes)) = self.entry_key(key) else {
            return Found::Unavailable;
        };
        let mut fetched = self.tier.lease_blocking(redis_key.clone());
        if matches!(&fetched, Some(f) if f.bytes.is_none() && matches!(f.lease, Lease::Held)) {
            fetched = self
                .tier
                .await_entry_blocking(redis_key.clone(), LEASE_WAIT);
        }
        self.found(redis_key, &bytes, fetched)
    }

    /// The async form of [`fetch_to_compute_blocking`](Self::fetch_to_compute_blocking).
    pub(crate) async fn fetch_to_compute(&self, key: &K) -> Found<V> {
        let Some((redis_key, bytes)) = self.entry_key(key) else {
            return Found::Unavailable;
        };
        let mut fetched = self.tier.lease(redis_key.clone()).await;
        if matches!(&fetched, Some(f) if f.bytes.is_none() && matches!(f.lease, Lease::Held)) {
            fetched = self.tier.await_entry(redis_key.clone(), LEASE_WAIT).await;
        }
        self.found(redis_key, &bytes, fetched)
    }

    /// Stores a computed value (and frees the lease `lease` holds).
    pub(crate) fn store(
        &self,
        key: &K,
        value: &V,
        deps: &[Dep],
        since: u64,
        lease: Option<LeaseGuard>,
    ) {
        let Some((redis_key, key_bytes)) = self.entry_key(key) else {
            return;
        };
        let token = lease.and_then(|mut l| l.token.take());
        match (self.codec.encode)(self.fingerprint, &key_bytes, deps, value) {
            Some(bytes) => match token {
                Some(token) => {
                    self.tier
                        .store_leased(redis_key, bytes, self.timeout, deps, since, token)
                }
                None => self.tier.store(redis_key, bytes, self.timeout, deps, since),
            },
            None => {
                if let Some(token) = token {
                    self.tier.release(redis_key, token);
                }
            }
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
