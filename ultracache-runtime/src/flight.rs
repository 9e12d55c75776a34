//! Single flight: concurrent misses on one key compute once; the others wait
//! (blocking a thread, or as a future on any executor) for the leader's result.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use event_listener::{Event, Listener};

use crate::dep::Dep;

/// One computation in progress. `done` is `Some(Some(slot))` once a value was
/// stored, `Some(None)` when waiters must look again (the leader failed,
/// panicked, was cancelled, or its value was stale).
pub(crate) struct Flight<S> {
    done: Mutex<Option<Option<Arc<S>>>>,
    event: Event,
    /// Who computes: the same computation waiting on itself would wait
    /// forever (a cached function calling itself with the same key, or two
    /// builders asking for each other).
    leader: Leader,
    /// Set before `done` when the leader's answer is "there is nothing":
    /// what that answer was computed from.
    absent: Mutex<Option<Box<[Dep]>>>,
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
    /// Whether waiting for this flight here would wait for itself: on the
    /// leading thread (`me`), or inside the leading future's poll.
    pub(crate) fn led_here(&self, me: Option<ThreadId>) -> bool {
        match self.leader {
            Leader::Thread(t) => me == Some(t),
            Leader::Task(id) => crate::recorder::inside(id),
        }
    }

    pub(crate) fn new(leader: Leader) -> Self {
        Flight {
            done: Mutex::new(None),
            event: Event::new(),
            leader,
            absent: Mutex::new(None),
        }
    }

    fn done(&self) -> Option<Option<Arc<S>>> {
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks the leader's answer as "there is nothing", computed from `deps`
    /// (before `finish`).
    pub(crate) fn mark_absent(&self, deps: Box<[Dep]>) {
        *self.absent.lock().unwrap_or_else(PoisonError::into_inner) = Some(deps);
    }

    /// What the leader's "there is nothing" was computed from, if that was
    /// its answer (once finished).
    pub(crate) fn absent(&self) -> Option<Box<[Dep]>> {
        self.absent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn finish(&self, slot: Option<Arc<S>>) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = Some(slot);
        self.event.notify(usize::MAX);
    }

    /// Blocks until the leader finishes.
    pub(crate) fn wait(&self) -> Option<Arc<S>> {
        loop {
            if let Some(done) = self.done() {
                return done;
            }
            let listener = self.event.listen();
            if let Some(done) = self.done() {
                return done;
            }
            listener.wait();
        }
    }

    /// Waits, as a future, until the leader finishes.
    pub(crate) async fn wait_async(&self) -> Option<Arc<S>> {
        loop {
            if let Some(done) = self.done() {
                return done;
            }
            let listener = self.event.listen();
            if let Some(done) = self.done() {
                return done;
            }
            listener.await;
        }
    }
}
