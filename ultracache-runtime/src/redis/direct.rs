//! Blocking reads on the caller's own thread, for sync callers of a single
//! Redis server: a pooled connection answers the caller directly, with no hop
//! to the tier's thread and back (each hop is a thread wake-up, together
//! about as long as the round trip to a local Redis).
//!
//! Only reads go this way (a fetch, a fetch that takes the key's lease):
//! nothing a caller waits on orders after them, and a read that races a
//! background store or delete on the tier's connection is a miss or the
//! entry that is about to go, exactly as it would be a moment earlier. A
//! connection on which a call failed is dropped, never reused: a late reply
//! must not answer the next call.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

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
