//! Listeners: integrations outside the core (the purgers of the proxies in
//! front of the site, and any other) hear of every invalidation a write on
//! this node makes, through a listener they register, instead of the core
//! calling them. The core's own instrumentation (tracing events and
//! counters) is in [`telemetry`](crate::telemetry).

use std::sync::{Arc, PoisonError, RwLock};

use crate::dep::{Dep, Kind};

/// Hears of invalidations.
pub(crate) trait Listener: Send + Sync + 'static {
    /// A write on this node invalidates `deps` (each as given) and whole
    /// `kinds`; called before anything is dropped.
    fn invalidating(&self, deps: &[Dep], kinds: &[Kind]);
}

static LISTENERS: RwLock<Vec<Arc<dyn Listener>>> = RwLock::new(Vec::new());

/// Registers `listener` for the life of the process.
#[cfg_attr(not(feature = "purge"), allow(dead_code))]
pub(crate) fn listen(listener: Arc<dyn Listener>) {
    LISTENERS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .push(listener);
}

/// Tells every listener that `deps` and `kinds` are being invalidated.
pub(crate) fn invalidating(deps: &[Dep], kinds: &[Kind]) {
    let listeners = LISTENERS.read().unwrap_or_else(PoisonError::into_inner);
    for listener in listeners.iter() {
        listener.invalidating(deps, kinds);
    }
}
