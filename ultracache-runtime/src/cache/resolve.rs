//! Resolving a key: the hit, single flight, the shared tier, computing and
//! publishing. The blocking and the async paths share every step but the
//! wait itself.

use std::future::Future;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::core::Core;
use super::outcome::{CacheKey, CacheValue, Outcome};
use super::slot::Slot;
use crate::flight::{Done, Flight, Leader};
use crate::recorder::{self, Reads};
#[cfg(feature = "redis")]
use crate::versions::versions;

enum Join<K: CacheKey, V: CacheValue> {
    Hit(V),
    Wait(Arc<Flight<Slot<K, V>>>),
    Lead(Lead<K, V>),
}

/// The one caller computing a key. Dropping it unfinished (panic,
/// cancellation) ends the flight as failed: the waiters elect a new leader.
pub(super) struct Lead<K: CacheKey, V: CacheValue> {
    core: Arc<Core<K, V>>,
    key: K,
    flight: Arc<Flight<Slot<K, V>>>,
    finished: bool,
}

impl<K: CacheKey, V: CacheValue> Lead<K, V> {
    pub(super) fn finish(mut self, slot: Option<Arc<Slot<K, V>>>) {
        self.finished = true;
        self.release(slot.map_or(Done::Failed, Done::Stored));
    }

    /// Finishes with a definitive "nothing", computed from `reads`: waiters
    /// that share it return it, depending on what it read.
    fn finish_absent(mut self, reads: Reads) {
        self.finished = true;
        self.release(Done::Absent(reads));
    }

    fn release(&self, done: Done<Slot<K, V>>) {
        {
            let mut flights = self.core.lock_flights();
            if flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.key);
            }
        }
        self.flight.finish(done);
    }
}

impl<K: CacheKey, V: CacheValue> Drop for Lead<K, V> {
    fn drop(&mut self) {
        if !self.finished {
            self.release(Done::Failed);
        }
    }
}

/// Why `find` found no value: who computes.
pub(super) enum Miss<K: CacheKey, V: CacheValue> {
    /// This caller, as the leader of a flight.
    Lead(Lead<K, V>),
    /// This caller, on its own (a computation asking for its own key).
    Alone,
    /// Nobody: the leader this caller waited for found there is nothing.
    Absent,
}

/// What one turn of `find` decided.
enum Turn<K: CacheKey, V: CacheValue> {
    Found(Result<V, Miss<K, V>>),
    Wait(Arc<Flight<Slot<K, V>>>),
}

impl<K: CacheKey, V: CacheValue> Core<K, V> {
    fn join(self: &Arc<Self>, key: &K, leader: Leader) -> Join<K, V> {
        let mut flights = self.lock_flights();
        // Looked up again under the lock: a leader publishes before it leaves.
        if let Some(v) = self.lookup(key) {
            return Join::Hit(v);
        }
        if let Some(flight) = flights.get(key) {
            return Join::Wait(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::new(leader));
        flights.insert(key.clone(), Arc::clone(&flight));
        Join::Lead(Lead {
            core: Arc::clone(self),
            key: key.clone(),
            flight,
            finished: false,
        })
    }

    /// One turn of `find`: a hit, a decision, or a flight to wait for.
    fn turn(self: &Arc<Self>, key: &K, leader: Leader, me: Option<thread::ThreadId>) -> Turn<K, V> {
        if let Some(v) = self.lookup(key) {
            return Turn::Found(Ok(v));
        }
        match self.join(key, leader) {
            Join::Hit(v) => Turn::Found(Ok(v)),
            Join::Lead(lead) => Turn::Found(Err(Miss::Lead(lead))),
            // A computation that asks for its own key would wait for itself.
            Join::Wait(flight) if flight.led_here(me) => Turn::Found(Err(Miss::Alone)),
            Join::Wait(flight) => {
                self.counters.coalesced.add(1);
                Turn::Wait(flight)
            }
        }
    }

    /// What a waiter does with how the flight ended: a value, "nothing", or
    /// (`None`) another turn, to lead or wait for the next leader.
    fn waited(&self, done: Done<Slot<K, V>>) -> Option<Result<V, Miss<K, V>>> {
        match done {
            Done::Stored(slot) => self.take(&slot).map(Ok),
            Done::Absent(reads) => {
                recorder::track_reads(reads);
                Some(Err(Miss::Absent))
            }
            Done::Failed => None,
        }
    }

    /// Finds the value for `key`, or decides who computes it, blocking while
    /// another thread computes it.
    pub(super) fn find(self: &Arc<Self>, key: &K) -> Result<V, Miss<K, V>> {
        let me = thread::current().id();
        loop {
            match self.turn(key, Leader::Thread(me), Some(me)) {
                Turn::Found(found) => return found,
                Turn::Wait(flight) => {
                    if let Some(found) = self.waited(flight.wait()) {
                        return found;
                    }
                }
            }
        }
    }

    /// The async form of [`find`](Self::find): `task` is the frame id of the
    /// computation that would lead.
    async fn find_async(self: &Arc<Self>, key: &K, task: u64) -> Result<V, Miss<K, V>> {
        loop {
            match self.turn(key, Leader::Task(task), None) {
                Turn::Found(found) => return found,
                Turn::Wait(flight) => {
                    if let Some(found) = self.waited(flight.wait_async().await) {
                        return found;
                    }
                }
            }
        }
    }

    /// Stores a finished computation's value, releases its waiters and
    /// passes the computation on to the enclosing frame.
    pub(super) fn finish<R, O: Outcome<R, Value = V>>(
        self: &Arc<Self>,
        key: K,
        lead: Option<Lead<K, V>>,
        result: &R,
        reads: Reads,
        weigh: Option<fn(&R) -> usize>,
    ) {
        self.finish_for::<R, O>(key, lead, result, reads, weigh, self.timeout);
    }

    /// [`finish`](Self::finish), the value expiring after `timeout`.
    fn finish_for<R, O: Outcome<R, Value = V>>(
        self: &Arc<Self>,
        key: K,
        lead: Option<Lead<K, V>>,
        result: &R,
        reads: Reads,
        weigh: Option<fn(&R) -> usize>,
        timeout: Option<Duration>,
    ) {
        let heap = weigh.map(|w| w(result));
        let Some(value) = O::value(result) else {
            match lead {
                Some(lead) if O::shared_miss().is_some() => lead.finish_absent(reads.clone()),
                Some(lead) => lead.finish(None),
                None => {}
            }
            recorder::track_reads(reads);
            return;
        };
        let slot = self.publish_for(key, value.clone(), &reads, heap, timeout);
        Self::pass_on(slot.as_ref(), reads);
        if let Some(lead) = lead {
            lead.finish(slot);
        }
    }

    /// What a miss decided: `Ok(lead)` to compute, `Err(result)` to return.
    fn decide<R, O: Outcome<R, Value = V>>(
        found: Result<V, Miss<K, V>>,
    ) -> Result<Option<Lead<K, V>>, R> {
        match found {
            Ok(v) => Err(O::wrap(v)),
            Err(Miss::Lead(lead)) => Ok(Some(lead)),
            Err(Miss::Alone) => Ok(None),
            Err(Miss::Absent) => O::shared_miss().map_or(Ok(None), Err),
        }
    }

    #[inline]
    pub(super) fn resolve<R, O: Outcome<R, Value = V>>(
        self: &Arc<Self>,
        key: K,
        weigh: Option<fn(&R) -> usize>,
        f: impl FnOnce() -> R,
    ) -> R {
        self.resolve_for::<R, O>(key, weigh, self.timeout, f)
    }

    /// [`resolve`](Self::resolve), a computed value expiring after `timeout`
    /// rather than the cache's (one cache for values of many lifetimes).
    #[inline]
    pub(super) fn resolve_for<R, O: Outcome<R, Value = V>>(
        self: &Arc<Self>,
        key: K,
        weigh: Option<fn(&R) -> usize>,
        timeout: Option<Duration>,
        f: impl FnOnce() -> R,
    ) -> R {
        // The hit path: nothing else before it.
        if let Some(v) = self.lookup(&key) {
            return O::wrap(v);
        }
        self.resolve_miss::<R, O>(key, weigh, timeout, f)
    }

    /// [`resolve_for`](Self::resolve_for) after the hit path missed.
    fn resolve_miss<R, O: Outcome<R, Value = V>>(
        self: &Arc<Self>,
        key: K,
        weigh: Option<fn(&R) -> usize>,
        timeout: Option<Duration>,
        f: impl FnOnce() -> R,
    ) -> R {
        let lead = match Self::decide::<R, O>(self.find(&key)) {
            Ok(lead) => lead,
            Err(r) => return r,
        };
        #[cfg(feature = "redis")]
        let since = {
            let basis = versions().now();
            match self
                .shared
                .as_ref()
                .map(|s| s.fetch_to_compute_blocking(&key))
            {
                Some(crate::tier::Found::Hit(value, deps)) => {
                    return O::wrap(self.shared_hit(key, lead, value, deps, basis));
                }
                Some(crate::tier::Found::Miss { since, lease }) => Some((since, lease)),
                _ => None,
            }
        };
        self.missed();
        let (result, reads) = if self.grace.is_none() {
            recorder::capture_reads(f)
        } else {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                recorder::capture_reads(f)
            }));
            match caught {
                Ok(computed) => computed,
                Err(panic) => match self.serve_kept(&key) {
                    // The leader's flight ends failed: waiters try again.
                    Some(v) => return O::wrap(v),
                    None => std::panic::resume_unwind(panic),
                },
            }
        };
        let kept = self.after_compute::<R, O>(&key, &result);
        #[cfg(feature = "redis")]
        self.store_shared::<R, O>(&key, &result, &reads, since);
        self.finish_for::<R, O>(key, lead, &result, reads, weigh, timeout);
        match kept {
            Some(v) => O::wrap(v),
            None => result,
        }
    }

    /// With a grace period: the value kept for `key` when `result` is a
    /// failure (not stored, and not a definitive "nothing"); forgets it when
    /// `result` is a good value.
    fn after_compute<R, O: Outcome<R, Value = V>>(&self, key: &K, result: &R) -> Option<V> {
        let grace = self.grace.as_ref()?;
        if O::failed(result) {
            return self.serve_kept(key);
        }
        if O::value(result).is_some() {
            grace.forget(key);
        }
        None
    }

    pub(super) async fn resolve_async<R, O, F>(
        self: &Arc<Self>,
        key: K,
        weigh: Option<fn(&R) -> usize>,
        fut: F,
    ) -> R
    where
        O: Outcome<R, Value = V>,
        F: Future<Output = R>,
    {
        if let Some(v) = self.lookup(&key) {
            return O::wrap(v);
        }
        let task = recorder::frame_id();
        let lead = match Self::decide::<R, O>(self.find_async(&key, task).await) {
            Ok(lead) => lead,
            Err(r) => return r,
        };
        #[cfg(feature = "redis")]
        let since = {
            let basis = versions().now();
            match &self.shared {
                Some(shared) => match shared.fetch_to_compute(&key).await {
                    crate::tier::Found::Hit(value, deps) => {
                        return O::wrap(self.shared_hit(key, lead, value, deps, basis));
                    }
                    crate::tier::Found::Miss { since, lease } => Some((since, lease)),
                    crate::tier::Found::Unavailable => None,
                },
                None => None,
            }
        };
        self.missed();
        let (result, reads) = if self.grace.is_none() {
            recorder::computing(task, fut).await
        } else {
            let (caught, reads) =
                recorder::computing(task, super::grace::CatchUnwind::new(fut)).await;
            match caught {
                Ok(result) => (result, reads),
                Err(panic) => match self.serve_kept(&key) {
                    Some(v) => return O::wrap(v),
                    None => std::panic::resume_unwind(panic),
                },
            }
        };
        let kept = self.after_compute::<R, O>(&key, &result);
        #[cfg(feature = "redis")]
        self.store_shared::<R, O>(&key, &result, &reads, since);
        self.finish::<R, O>(key, lead, &result, reads, weigh);
        match kept {
            Some(v) => O::wrap(v),
            None => result,
        }
    }

    fn missed(&self) {
        self.counters.misses.add(1);
        crate::telemetry::miss(self.name);
    }

    /// A value the shared tier had, fetched after `basis`: it joins this
    /// process's store (with its dependencies, so invalidations reach it)
    /// and counts as a hit.
    #[cfg(feature = "redis")]
    pub(super) fn shared_hit(
        self: &Arc<Self>,
        key: K,
        lead: Option<Lead<K, V>>,
        value: V,
        deps: Vec<crate::dep::Dep>,
        basis: u64,
    ) -> V {
        let reads = Reads::of(deps, basis);
        self.counters.hits.add(1);
        self.counters.shared_hits.add(1);
        let slot = self.publish(key, value.clone(), &reads, None);
        Self::pass_on(slot.as_ref(), reads);
        if let Some(lead) = lead {
            lead.finish(slot);
        }
        value
    }

    /// Offers a computed value to the shared tier (it refuses it there if
    /// something it read was invalidated since `since`).
    #[cfg(feature = "redis")]
    fn store_shared<R, O: Outcome<R, Value = V>>(
        &self,
        key: &K,
        result: &R,
        reads: &Reads,
        since: Option<(u64, Option<crate::tier::LeaseGuard>)>,
    ) {
        // A lease not used to store is freed when dropped.
        if let (Some(shared), Some((since, lease)), Some(value)) =
            (&self.shared, since, O::value(result))
        {
            shared.store(key, value, &reads.all_deps(), since, lease);
        }
    }
}
