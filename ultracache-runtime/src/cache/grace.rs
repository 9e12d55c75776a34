//! Serving stale on error, never stale on change: with a grace period, a
//! value that expired by time is kept, and returned when computing it again
//! fails (an `Err`, a panic) — as long as the grace lasts and nothing it read
//! has been written since (an invalidated value is known to be wrong, and is
//! never served this way).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use super::core::{Core, Hasher};
use super::outcome::{CacheKey, CacheValue};
use super::slot::Slot;
use crate::clock::{self, Nanos};
use crate::dep::Dep;
use crate::store::Store;
use crate::versions::versions;

/// Expired values kept per cache at most: past this, the ones whose grace
/// ended are dropped, and if none has, a new one is not kept.
const MAX_KEPT: usize = 10_000;

/// In a store bounded in bytes, the kept values of all its caches weigh at
/// most this share of the bound (`bound / KEPT_SHARE`), each cache's an
/// equal part of it: past its part, a cache's values whose grace ends first
/// make room, and a value heavier than the part is not kept.
pub(super) const KEPT_SHARE: u64 = 4;

/// A value past its timeout, kept for its grace period.
struct Kept<V> {
    value: V,
    deps: Box<[Dep]>,
    basis: u64,
    until: Nanos,
    /// Its entry's weight (bytes, as the store counts them).
    weight: u64,
}

/// One cache's expired values, by key.
pub(super) struct Grace<K, V> {
    period: Duration,
    /// The bytes the kept values of the store's caches may weigh together,
    /// in a store bounded in bytes.
    budget: Option<u64>,
    /// The store, which counts what its caches keep.
    store: Arc<Store>,
    kept: Mutex<KeptValues<K, V>>,
}

/// A cache's kept values, locked: what they weigh is counted in the store
/// when the lock is released.
struct Locked<'a, K, V> {
    kept: MutexGuard<'a, KeptValues<K, V>>,
    store: &'a Store,
    before: u64,
}

impl<K, V> Drop for Locked<'_, K, V> {
    fn drop(&mut self) {
        let after = self.kept.bytes;
        if after > self.before {
            self.store.kept.fetch_add(after - self.before, SeqCst);
        } else if after < self.before {
            self.store.kept.fetch_sub(self.before - after, SeqCst);
        }
    }
}

impl<K, V> Drop for Grace<K, V> {
    fn drop(&mut self) {
        let kept = self.kept.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.store.kept.fetch_sub(kept.bytes, SeqCst);
        self.store.keepers.fetch_sub(1, SeqCst);
    }
}

struct KeptValues<K, V> {
    by_key: HashMap<K, Kept<V>, Hasher>,
    /// What they weigh together.
    bytes: u64,
}

impl<K: CacheKey, V> KeptValues<K, V> {
    fn remove(&mut self, key: &K) {
        if let Some(k) = self.by_key.remove(key) {
            self.bytes -= k.weight;
        }
    }

    /// Drops those whose grace ended.
    fn sweep(&mut self, now: Nanos) {
        let mut freed = 0;
        self.by_key.retain(|_, k| {
            let keep = k.until > now;
            if !keep {
                freed += k.weight;
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Drops the one whose grace ends first.
    fn drop_soonest(&mut self) -> bool {
        let soonest = self
            .by_key
            .iter()
            .min_by_key(|(_, k)| k.until)
            .map(|(key, _)| key.clone());
        match soonest {
            Some(key) => {
                self.remove(&key);
                true
            }
            None => false,
        }
    }
}

impl<K: CacheKey, V: CacheValue> Grace<K, V> {
    /// Keeps values for `period` past their timeout, within `store`'s
    /// budget for them if it is bounded in bytes.
    pub(super) fn new(period: Duration, store: &Arc<Store>) -> Self {
        store.keepers.fetch_add(1, SeqCst);
        Grace {
            period,
            budget: store.max_bytes.map(|b| (b / KEPT_SHARE).max(1)),
            store: Arc::clone(store),
            kept: Mutex::new(KeptValues {
                by_key: HashMap::with_hasher(Hasher::default()),
                bytes: 0,
            }),
        }
    }

    /// Keeps an entry that just expired.
    pub(super) fn keep(&self, slot: &Slot<K, V>) {
        let until = slot
            .deadline
            .saturating_add(self.period.as_nanos().min(u128::from(u64::MAX)) as u64);
        let now = clock::now();
        if until <= now {
            return;
        }
        let weight = u64::from(slot.weight);
        // This cache's part of the store's budget.
        let part = self
            .budget
            .map(|budget| budget / self.store.keepers.load(SeqCst).max(1));
        if part.is_some_and(|part| weight > part) {
            return;
        }
        let mut locked = self.lock();
        let kept = &mut *locked.kept;
        kept.remove(&slot.key);
        if kept.by_key.len() >= MAX_KEPT {
            kept.sweep(now);
            if kept.by_key.len() >= MAX_KEPT {
                return;
            }
        }
        if let (Some(budget), Some(part)) = (self.budget, part) {
            if kept.bytes + weight > part {
                kept.sweep(now);
            }
            while kept.bytes + weight > part {
                if !kept.drop_soonest() {
                    break;
                }
            }
            // Another cache may hold more than its part (it came before
            // this one did, and has kept nothing since): the store's
            // budget still holds.
            let others = self.store.kept.load(SeqCst).saturating_sub(locked.before);
            if others + locked.kept.bytes + weight > budget {
                return;
            }
        }
        let kept = &mut *locked.kept;
        kept.bytes += weight;
        kept.by_key.insert(
            slot.key.clone(),
            Kept {
                value: slot.value.clone(),
                deps: slot.deps.as_slice().into(),
                basis: slot.basis,
                until,
                weight,
            },
        );
    }

    pub(super) fn forget(&self, key: &K) {
        let mut locked = self.lock();
        if !locked.kept.by_key.is_empty() {
            locked.kept.remove(key);
        }
    }

    fn lock(&self) -> Locked<'_, K, V> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let before = kept.bytes;
        Locked {
            kept,
            store: &self.store,
            before,
        }
    }

    /// How many values are kept, and what they weigh.
    pub(super) fn kept(&self) -> (usize, u64) {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        (kept.by_key.len(), kept.bytes)
    }
}

impl<K: CacheKey, V: CacheValue> Core<K, V> {
    /// The value kept for `key` after it expired, if computing it again
    /// failed within its grace and nothing it read was written since (its
    /// dependencies, its key, its cache and store cleared).
    pub(super) fn serve_kept(&self, key: &K) -> Option<V> {
        let grace = self.grace.as_ref()?;
        let mut locked = grace.lock();
        let kept = &mut *locked.kept;
        let k = kept.by_key.get(key)?;
        let v = versions();
        let good = clock::now() < k.until
            && !v.changed(&k.deps, k.basis)
            && v.version(self.key_version(key)) <= k.basis
            && self.cleared.load(SeqCst) <= k.basis
            && self.store.cleared.load(SeqCst) <= k.basis;
        if !good {
            kept.remove(key);
            return None;
        }
        let value = k.value.clone();
        // A computation that uses it depends on what it was computed from.
        crate::recorder::track_deps(&k.deps);
        drop(locked);
        self.counters.served_stale.add(1);
        tracing::debug!(
            target: "ultracache",
            cache = self.name,
            "recomputing an expired value failed: serving the last good value"
        );
        Some(value)
    }
}

pin_project_lite::pin_project! {
    /// A future's output, or the panic that ended it.
    pub(super) struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    pub(super) fn new(inner: F) -> Self {
        CatchUnwind { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
