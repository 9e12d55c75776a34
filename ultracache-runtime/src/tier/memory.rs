//! An in-process shared tier, with the Redis tier's semantics (a registry
//! of dependencies, an invalidation tick, refused stores, fail-open
//! outages), for testing the multi-node protocol without Redis: this process
//! is one node, and the handle acts as the others.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::codec::{dep_name, hash};
use super::{Fetched, SharedTier, TierStats};
use crate::dep::{Dep, Kind};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An in-process stand-in for the Redis tier, for tests: install it with
/// [`Config::memory_tier`](crate::Config::memory_tier), then act as the other
/// nodes of the site through this handle (their invalidations reach this
/// node as Redis's would), or take the tier down to see this node fail open.
///
/// ```
/// use ultracache::{Config, MemoryTier};
///
/// let tier = MemoryTier::new();
/// # if false {
/// Config::new().memory_tier(&tier).install().unwrap();
/// # }
/// assert_eq!(tier.len(), 0);
/// ```
#[derive(Clone, Default)]
pub struct MemoryTier(pub(crate) Arc<Memory>);

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(crate) struct Memory {
    state: Mutex<State>,
    down: AtomicBool,
    stores: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

#[derive(Default)]
struct State {
    tick: u64,
    cleared: u64,
    entries: HashMap<String, (Vec<u8>, Option<Instant>)>,
    /// Dependency name → entry keys.
    registry: HashMap<String, HashSet<String>>,
    /// Kind → dependency names of that kind.
    kinds: HashMap<String, HashSet<String>>,
    /// Dependency name → tick of its last invalidation.
    generations: HashMap<String, u64>,
    /// Kind → tick of its last whole-kind invalidation.
    kind_generations: HashMap<String, u64>,
}

impl State {
    fn stale(&self, deps: &[Dep], since: u64) -> bool {
        self.cleared > since
            || deps.iter().any(|dep| {
                self.generations
                    .get(&dep_name(dep))
                    .is_some_and(|g| *g > since)
                    || self
                        .kind_generations
                        .get(dep.model_kind().name())
                        .is_some_and(|g| *g > since)
            })
    }

    fn store(&mut self, key: String, bytes: Vec<u8>, ttl: Option<Duration>, deps: &[Dep]) {
        let expires = ttl.and_then(|t| Instant::now().checked_add(t));
        for dep in deps {
            let name = dep_name(dep);
            self.registry
                .entry(name.clone())
                .or_default()
                .insert(key.clone());
            self.kinds
                .entry(dep.model_kind().name().to_owned())
                .or_default()
                .insert(name);
        }
        self.entries.insert(key, (bytes, expires));
    }

    fn drop_dep(&mut self, name: &str) {
        for key in self.registry.remove(name).unwrap_or_default() {
            self.entries.remove(&key);
        }
    }

    fn invalidate(&mut self, deps: &[Dep], kinds: &[Kind]) -> u64 {
        self.tick += 1;
        let tick = self.tick;
        for dep in deps {
            let name = dep_name(dep);
            self.generations.insert(name.clone(), tick);
            self.drop_dep(&name);
        }
        for kind in kinds {
            self.kind_generations.insert(kind.name().to_owned(), tick);
            for name in self.kinds.remove(kind.name()).unwrap_or_default() {
                self.drop_dep(&name);
            }
        }
        tick
    }
}

impl MemoryTier {
    /// An empty tier.
    pub fn new() -> Self {
        MemoryTier::default()
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.0.lock().entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the tier down (every call fails, as an unreachable Redis) or
    /// brings it back.
    pub fn set_down(&self, down: bool) {
        self.0.down.store(down, SeqCst);
    }

    /// Invalidates `deps` in the tier alone (as another node's write does,
    /// before this node hears of it).
    pub(crate) fn invalidate_in_tier(&self, deps: &[Dep]) {
        self.0.lock().invalidate(deps, &[]);
    }
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn up(&self) -> bool {
        if self.down.load(SeqCst) {
            self.errors.fetch_add(1, SeqCst);
            return false;
        }
        true
    }

    fn put(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
    ) -> Option<bool> {
        if !self.up() {
            return None;
        }
        let mut state = self.lock();
        if state.stale(deps, since) {
            self.refused.fetch_add(1, SeqCst);
            return Some(false);
        }
        state.store(key, bytes, ttl, deps);
        self.stores.fetch_add(1, SeqCst);
        Some(true)
    }
}

impl SharedTier for Memory {
    fn entry_key(&self, cache: &str, key: &[u8]) -> String {
        format!("e:{cache}:{:016x}", hash(key) ^ key.len() as u64)
    }

    fn fetch_blocking(&self, key: String) -> Option<Fetched> {
        if !self.up() {
            return None;
        }
        let mut state = self.lock();
        let bytes = match state.entries.get(&key) {
            Some((_, Some(expires))) if *expires <= Instant::now() => {
                state.entries.remove(&key);
                None
            }
            Some((bytes, _)) => Some(bytes.clone()),
            None => None,
        };
        Some(Fetched {
            lease: super::Lease::None,
            bytes,
            since: state.tick,
        })
    }

    fn fetch(&self, key: String) -> BoxFuture<'_, Option<Fetched>> {
        Box::pin(std::future::ready(self.fetch_blocking(key)))
    }

    fn store(&self, key: String, bytes: Vec<u8>, ttl: Option<Duration>, deps: &[Dep], since: u64) {
        let _ = self.put(key, bytes, ttl, deps, since);
    }

    fn store_now(
        &self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &[Dep],
        since: u64,
    ) -> Option<bool> {
        self.put(key, bytes, ttl, deps, since)
    }

    fn store_now_async<'a>(
        &'a self,
        key: String,
        bytes: Vec<u8>,
        ttl: Option<Duration>,
        deps: &'a [Dep],
        since: u64,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(std::future::ready(self.put(key, bytes, ttl, deps, since)))
    }

    fn delete(&self, key: String) {
        if self.up() {
            self.lock().entries.remove(&key);
        }
    }

    fn invalidate(&self, deps: &[Dep], kinds: &[Kind]) -> Option<u64> {
        if deps.is_empty() && kinds.is_empty() {
            return None;
        }
        if !self.up() {
            return None;
        }
        Some(self.lock().invalidate(deps, kinds))
    }

    fn invalidate_async<'a>(
        &'a self,
        deps: &'a [Dep],
        kinds: &'a [Kind],
    ) -> BoxFuture<'a, Option<u64>> {
        Box::pin(std::future::ready(SharedTier::invalidate(
            self, deps, kinds,
        )))
    }

    fn clear(&self) {
        if self.up() {
            let mut state = self.lock();
            state.tick += 1;
            state.cleared = state.tick;
            state.entries.clear();
            state.registry.clear();
            state.kinds.clear();
        }
    }

    fn stats(&self) -> TierStats {
        TierStats {
            configured: true,
            errors: self.errors.load(SeqCst),
            stores: self.stores.load(SeqCst),
            refused: self.refused.load(SeqCst),
            reconnects: 0,
            leases: 0,
            lease_waits: 0,
        }
    }
}
