//! Single flight: concurrent misses on one key compute once; the others wait
//! (blocking a thread, or as a future on any executor) for the leader's
//! result. When the leader fails — it panicked, its future was dropped, or
//! it stored nothing — the waiters elect one new leader among themselves
//! (see `cache::resolve`), so a failing backend sees one more computation,
//! not one per waiter.

use std::sync::Arc;
use std::thread::ThreadId;

use crate::recorder::Reads;
use crate::wait::Promise;

/// How a flight ended.
pub(crate) enum Done<S> {
    /// The leader stored this entry.
    Stored(Arc<S>),
    /// The leader's definitive answer is "there is nothing", from these reads.
    Absent(Reads),
    /// The leader stored nothing (failed, panicked, was cancelled, computed
    /// a stale value): the waiters elect a new leader.
    Failed,
}

impl<S> Clone for Done<S> {
    fn clone(&self) -> Self {
        match self {
            Done::Stored(s) => Done::Stored(Arc::clone(s)),
            Done::Absent(r) => Done::Absent(r.clone()),
            Done::Failed => Done::Failed,
        }
    }
}

/// One computation in progress.
pub(crate) struct Flight<S> {
    done: Promise<Done<S>>,
    /// Who computes: the same computation waiting on itself would wait
    /// forever (a cached function calling itself with the same key, or two
    /// builders asking for each other).
    leader: Leader,
}

/// Who leads a flight.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Leader {
    /// A blocking computation on this thread.
    Thread(ThreadId),
    /// A future, recording in the frame with this id.
    Task(u64),
}

impl<S> Flight<S> {
    pub(crate) fn new(leader: Leader) -> Self {
        Flight {
            done: Promise::new(),
            leader,
        }
    }

    /// Whether waiting for this flight here would wait for itself: on the
    /// leading thread (`me`), or inside the leading future's poll.
    pub(crate) fn led_here(&self, me: Option<ThreadId>) -> bool {
        match self.leader {
            Leader::Thread(t) => me == Some(t),
            Leader::Task(id) => crate::recorder::inside(id),
        }
    }

    /// Ends the flight and wakes every waiter (the first call wins).
    pub(crate) fn finish(&self, done: Done<S>) {
        self.done.fulfil(done);
    }

    /// Blocks until the leader finishes.
    pub(crate) fn wait(&self) -> Done<S> {
        self.done.wait()
    }

    /// Waits, as a future, until the leader finishes.
    pub(crate) async fn wait_async(&self) -> Done<S> {
        self.done.wait_async().await
    }
}
