//! Single flight: concurrent misses on one key compute once; the others wait
//! (blocking a thread, or as a future on any executor) for the leader's result.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use event_listener::{Event, Listener};

/// One computation in progress. `done` is `Some(Some(slot))` once a value was
/// stored, `Some(None)` when waiters must look again (the leader failed,
/// panicked, was cancelled, or its value was stale).
pub(crate) struct Flight<S> {
    done: Mutex<Option<Option<Arc<S>>>>,
    event: Event,
    /// The thread of a blocking leader: the same thread waiting on it would
    /// wait forever (a cached function calling itself with the same key).
    pub(crate) leader: Option<ThreadId>,
}

impl<S> Flight<S> {
    pub(crate) fn new(leader: Option<ThreadId>) -> Self {
        Flight {
            done: Mutex::new(None),
            event: Event::new(),
            leader,
        }
    }

    fn done(&self) -> Option<Option<Arc<S>>> {
        self.done
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
