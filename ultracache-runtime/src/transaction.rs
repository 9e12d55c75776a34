//! Invalidation on commit: while a database transaction is open, the
//! invalidations its writes make are queued, applied once it commits and
//! discarded if it rolls back. Invalidating before the commit would be
//! undone by any reader in between, which still reads (and caches) the old,
//! committed rows; invalidating after it refuses and drops everything
//! computed from them — but leaves a moment when the new rows are visible
//! and the old copies not yet dropped. So the queued invalidations are also
//! *held* from just before the commit until they are applied
//! (`invalidation::HeldCommit`): this process's copies go first, and what
//! is computed from the rows in between is served but not stored. A
//! computation that runs inside the transaction may read its uncommitted
//! writes, so it is not stored.
//!
//! The queue is carried like a recording frame: [`Queue::scope`] installs it
//! for each poll of a future, [`Queue::scope_blocking`] for a closure; every
//! invalidation made there (`invalidate`, `#[invalidates]`…) is queued.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use crate::dep::{Dep, Kind};

thread_local! {
    static OPEN: RefCell<Vec<Arc<Queue>>> = const { RefCell::new(Vec::new()) };
}

/// The invalidations of one open transaction.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    deps: Vec<Dep>,
    kinds: Vec<Kind>,
}

impl Queue {
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Queue::default())
    }

    /// Queues `deps` (each as given) and whole `kinds`.
    pub(crate) fn push(&self, deps: &[Dep], kinds: &[Kind]) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        p.deps.extend_from_slice(deps);
        p.kinds.extend_from_slice(kinds);
    }

    /// Takes what was queued (sorted, without duplicates).
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    pub(crate) fn take(&self) -> (Vec<Dep>, Vec<Kind>) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut deps = std::mem::take(&mut p.deps);
        let mut kinds = std::mem::take(&mut p.kinds);
        deps.sort_unstable();
        deps.dedup();
        kinds.sort_unstable();
        kinds.dedup();
        (deps, kinds)
    }

    /// Runs `f` with this transaction open on this thread.
    pub(crate) fn scope_blocking<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        struct Close;
        impl Drop for Close {
            fn drop(&mut self) {
                OPEN.with(|o| o.borrow_mut().pop());
            }
        }
        OPEN.with(|o| o.borrow_mut().push(Arc::clone(self)));
        let _close = Close;
        f()
    }

    /// `fut`, with this transaction open during each of its polls.
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    pub(crate) fn scope<F: Future>(self: &Arc<Self>, fut: F) -> Scoped<F> {
        Scoped {
            inner: fut,
            queue: Arc::clone(self),
        }
    }
}

/// The transaction open here, if any: invalidations go to its queue.
pub(crate) fn open() -> Option<Arc<Queue>> {
    OPEN.with(|o| o.borrow().last().cloned())
}

/// Whether a transaction is open here (computations are not stored).
pub(crate) fn active() -> bool {
    OPEN.with(|o| !o.borrow().is_empty())
}

pin_project_lite::pin_project! {
    /// A future run inside a transaction; see `Transaction::scope`.
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        queue: Arc<Queue>,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        this.queue.scope_blocking(|| inner.poll(cx))
    }
}
