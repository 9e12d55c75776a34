//! The block API: look up, compute, store, in three steps
//! ([`Cache::begin`](super::Cache::begin)).

use std::marker::PhantomData;
use std::sync::Arc;

use super::core::Core;
use super::outcome::{CacheKey, CacheValue};
use super::resolve::Lead;
use crate::recorder::{self, Reads};

/// The result of [`Cache::begin`](super::Cache::begin).
#[derive(Debug)]
pub enum Lookup<'a, K: CacheKey, V: CacheValue> {
    /// A live entry's value; its dependencies were recorded.
    Hit(V),
    /// No entry: compute the value, then [`Recording::store`] it.
    Miss(Recording<'a, K, V>),
}

/// A computation being recorded for [`Cache::begin`](super::Cache::begin). Reads on this thread
/// until [`store`](Self::store) are the entry's dependencies. Dropping it
/// without storing stores nothing (and lets waiting callers compute).
#[must_use = "call `store` with the computed value"]
pub struct Recording<'a, K: CacheKey, V: CacheValue> {
    target: Option<(Arc<Core<K, V>>, K)>,
    lead: Option<Lead<K, V>>,
    open: bool,
    // The frame lives on this thread's stack of frames.
    _not_send: PhantomData<(*const (), &'a ())>,
}

impl<K: CacheKey, V: CacheValue> std::fmt::Debug for Recording<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

impl<K: CacheKey, V: CacheValue> Recording<'_, K, V> {
    pub(super) fn open(core: Arc<Core<K, V>>, key: K, lead: Option<Lead<K, V>>) -> Self {
        recorder::push_frame();
        Recording {
            target: Some((core, key)),
            lead,
            open: true,
            _not_send: PhantomData,
        }
    }

    /// A recording for a cache that has no store: it stores nothing.
    pub(super) fn detached() -> Self {
        recorder::push_frame();
        Recording {
            target: None,
            lead: None,
            open: true,
            _not_send: PhantomData,
        }
    }

    fn close(&mut self) -> Reads {
        self.open = false;
        recorder::pop_frame()
    }

    /// Stores `value` with the dependencies recorded since the look-up, and
    /// returns it.
    pub fn store(mut self, value: V) -> V {
        let reads = self.close();
        match self.target.take() {
            Some((core, key)) => {
                let slot = core.publish(key, value.clone(), &reads, None);
                Core::pass_on(slot.as_ref(), reads);
                if let Some(lead) = self.lead.take() {
                    lead.finish(slot);
                }
            }
            None => recorder::track_reads(reads),
        }
        value
    }
}

impl<K: CacheKey, V: CacheValue> Drop for Recording<'_, K, V> {
    /// Unstored, what was read still reaches the enclosing frame, and the
    /// callers waiting for this key elect a new leader.
    fn drop(&mut self) {
        if self.open {
            let reads = self.close();
            recorder::track_reads(reads);
        }
    }
}
