//! Reads on the caller's own thread, for callers of a single Redis server:
//! a pooled blocking connection answers a sync caller directly, and a
//! multiplexed connection driven by its own runtime answers an async one,
//! with no hop to the tier's thread and back (each hop is a thread wake-up,
//! together about as long as the round trip to a local Redis).
//!
//! Only reads go this way (a fetch, a fetch that takes the key's lease):
//! nothing a caller waits on orders after them, and a read that races a
//! background store or delete on the tier's connection is a miss or the
//! entry that is about to go, exactly as it would be a moment earlier. A
//! connection on which a call failed is dropped, never reused: a late reply
//! must not answer the next call.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::RedisResult;

/// Connections open at most: more callers at once go through the tier's
/// thread (opening and closing a connection per call would leave a socket
/// in `TIME_WAIT` per call, and run a busy node out of ports).
const MAX_OPEN: usize = 16;

pub(super) struct Direct {
    client: redis::Client,
    timeout: Duration,
    idle: Mutex<Vec<redis::Connection>>,
    /// Connections open (idle or in a call).
    open: AtomicUsize,
}

impl Direct {
    pub(super) fn new(client: redis::Client, timeout: Duration) -> Direct {
        Direct {
            client,
            timeout,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
        }
    }

    /// Runs `call` on a pooled connection (opened within the timeout; every
    /// read and write on it bounded by the timeout); `None` when every
    /// connection is in use.
    pub(super) fn call<T>(
        &self,
        call: impl FnOnce(&mut redis::Connection) -> RedisResult<T>,
    ) -> Option<RedisResult<T>> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                if self.open.fetch_add(1, SeqCst) >= MAX_OPEN {
                    self.open.fetch_sub(1, SeqCst);
                    return None;
                }
                match self.connect() {
                    Ok(c) => c,
                    Err(e) => {
                        self.open.fetch_sub(1, SeqCst);
                        return Some(Err(e));
                    }
                }
            }
        };
        let result = call(&mut conn);
        if result.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        } else {
            drop(conn);
            self.open.fetch_sub(1, SeqCst);
        }
        Some(result)
    }

    /// Closes the idle connections (after an outage: they may be dead).
    pub(super) fn forget(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        self.open.fetch_sub(idle.len(), SeqCst);
    }

    fn connect(&self) -> RedisResult<redis::Connection> {
        let c = self.client.get_connection_with_timeout(self.timeout)?;
        c.set_read_timeout(Some(self.timeout))?;
        c.set_write_timeout(Some(self.timeout))?;
        Ok(c)
    }
}

/// Why an async read gave no answer.
pub(super) enum Unanswered {
    /// Redis did not answer within the timeout: a failure of the tier's.
    TimedOut,
    /// No connection of this thread's runtime could ask it (none open yet
    /// and none could be made, or the one held here was broken, as when its
    /// runtime has shut down): the tier's thread may.
    NoConnection,
}

/// A thread's multiplexed connection, counted open in its `AsyncDirect`
/// until dropped (found broken, replaced, or its thread exited).
struct Held {
    owner: usize,
    conn: MultiplexedConnection,
    open: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.fetch_sub(1, SeqCst);
    }
}

thread_local! {
    /// This thread's multiplexed connection. Per thread, so that a
    /// connection is driven by the runtime of the threads that use it: a
    /// runtime blocked or shut down stalls no other runtime's reads.
    static MULTIPLEXED: RefCell<Option<Held>> = const { RefCell::new(None) };
    /// This thread's runtime cannot open sockets (built without
    /// `enable_io`): its callers go through the tier's thread.
    static NO_IO: Cell<bool> = const { Cell::new(false) };
}

/// Plain `GET`s for async callers on a tokio runtime, on a multiplexed
/// connection of the calling thread (at most [`MAX_OPEN`] over all threads;
/// callers past that, or on another executor, go through the tier's
/// thread).
pub(super) struct AsyncDirect {
    client: redis::Client,
    timeout: Duration,
    /// Tells this tier's connections from another's in a thread's slot.
    id: usize,
    /// Connections held by threads.
    open: Arc<AtomicUsize>,
}

impl AsyncDirect {
    pub(super) fn new(client: redis::Client, timeout: Duration) -> AsyncDirect {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        AsyncDirect {
            client,
            timeout,
            id: NEXT.fetch_add(1, SeqCst),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The value under `key` (any reply, `Nil` when there is none), read
    /// within the timeout.
    pub(super) async fn get(&self, key: &str) -> Result<redis::Value, Unanswered> {
        // (A thread's slots are gone while it exits: its callers, if any,
        // go through the tier's thread.)
        let no_io = NO_IO.try_with(Cell::get).unwrap_or(true);
        if no_io || tokio::runtime::Handle::try_current().is_err() {
            return Err(Unanswered::NoConnection);
        }
        let held = MULTIPLEXED
            .try_with(|slot| {
                slot.borrow()
                    .as_ref()
                    .filter(|held| held.owner == self.id)
                    .map(|held| held.conn.clone())
            })
            .map_err(|_| Unanswered::NoConnection)?;
        let mut conn = match held {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors().get(key);
        let read = pipe.query_async::<(redis::Value,)>(&mut conn);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok((value,))) => Ok(value),
            Ok(Err(_)) => {
                self.drop_held();
                Err(Unanswered::NoConnection)
            }
            Err(_) => {
                self.drop_held();
                Err(Unanswered::TimedOut)
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, Unanswered> {
        // Counted before it is made: callers connecting at once cannot
        // pass the bound together.
        if self.open.fetch_add(1, SeqCst) >= MAX_OPEN {
            self.open.fetch_sub(1, SeqCst);
            return Err(Unanswered::NoConnection);
        }
        // A runtime without its IO driver panics on the first socket: this
        // thread's callers then go through the tier's thread.
        let connect =
            tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection());
        let Ok(made) = futures_util::FutureExt::catch_unwind(AssertUnwindSafe(connect)).await
        else {
            let _ = NO_IO.try_with(|no| no.set(true));
            self.open.fetch_sub(1, SeqCst);
            return Err(Unanswered::NoConnection);
        };
        match made {
            Ok(Ok(conn)) => {
                let held = Held {
                    owner: self.id,
                    conn: conn.clone(),
                    open: Arc::clone(&self.open),
                };
                // Whatever the slot held (another tier's, or one made by a
                // concurrent first call on this thread) is dropped.
                let _ = MULTIPLEXED.try_with(|slot| drop(slot.replace(Some(held))));
                Ok(conn)
            }
            Ok(Err(_)) => {
                self.open.fetch_sub(1, SeqCst);
                Err(Unanswered::NoConnection)
            }
            Err(_) => {
                self.open.fetch_sub(1, SeqCst);
                Err(Unanswered::TimedOut)
            }
        }
    }

    /// Drops this thread's connection (a late reply must not answer the
    /// next call, and a broken one is made afresh).
    fn drop_held(&self) {
        let dropped = MULTIPLEXED.try_with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().is_some_and(|held| held.owner == self.id) {
                slot.take()
            } else {
                None
            }
        });
        drop(dropped);
    }
}
