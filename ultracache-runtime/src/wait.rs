//! The one place where code blocks or awaits: a [`Promise`], a value set
//! once and waited for by threads (blocking, with or without a deadline) or
//! by futures on any executor. Single flight waits on the leader's result
//! with it; the shared tier waits on its worker's replies with it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

/// A value set once ([`fulfil`](Self::fulfil)); every waiter wakes.
pub(crate) struct Promise<T> {
    value: Mutex<Option<T>>,
    event: Event,
}

impl<T> Default for Promise<T> {
    fn default() -> Self {
        Promise {
            value: Mutex::new(None),
            event: Event::new(),
        }
    }
}

impl<T> Promise<T> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the value (the first call wins) and wakes every waiter.
    pub(crate) fn fulfil(&self, value: T) {
        {
            let mut slot = self.lock();
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        self.event.notify(usize::MAX);
    }

    /// Blocks until `ready` finds the value ready, or until `deadline`.
    fn block<R>(
        &self,
        deadline: Option<Instant>,
        ready: impl Fn(&mut Option<T>) -> Option<R>,
    ) -> Option<R> {
        loop {
            if let Some(r) = ready(&mut self.lock()) {
                return Some(r);
            }
            let listener = self.event.listen();
            if let Some(r) = ready(&mut self.lock()) {
                return Some(r);
            }
            match deadline {
                None => listener.wait(),
                Some(deadline) => {
                    if listener.wait_deadline(deadline).is_none() {
                        return ready(&mut self.lock());
                    }
                }
            }
        }
    }

    /// Waits, as a future, until `ready` finds the value ready.
    async fn until<R>(&self, ready: impl Fn(&mut Option<T>) -> Option<R>) -> R {
        loop {
            if let Some(r) = ready(&mut self.lock()) {
                return r;
            }
            let listener = self.event.listen();
            if let Some(r) = ready(&mut self.lock()) {
                return r;
            }
            listener.await;
        }
    }

    /// Blocks at most `timeout` for the value, and takes it (one waiter).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn take_timeout(&self, timeout: Duration) -> Option<T> {
        self.block(Instant::now().checked_add(timeout), Option::take)
    }

    /// Waits at most `timeout`, as a future, for the value, and takes it.
    #[cfg(feature = "redis")]
    pub(crate) async fn take_async_timeout(&self, timeout: Duration) -> Option<T> {
        tokio::time::timeout(timeout, self.until(Option::take))
            .await
            .ok()
    }
}

impl<T: Clone> Promise<T> {
    /// Blocks until the value is set (every waiter gets a copy).
    pub(crate) fn wait(&self) -> T {
        match self.block(None, |v| v.clone()) {
            Some(v) => v,
            None => unreachable!("a wait without deadline returns the value"),
        }
    }

    /// Waits, as a future, until the value is set.
    pub(crate) async fn wait_async(&self) -> T {
        self.until(|v| v.clone()).await
    }
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_waiter_gets_the_value_and_a_deadline_bounds_the_wait() {
        let p = Arc::new(Promise::new());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || p.wait())
            })
            .collect();
        p.fulfil(7);
        p.fulfil(8);
        for w in waiters {
            assert_eq!(w.join().unwrap(), 7);
        }
        let never: Promise<u8> = Promise::new();
        assert_eq!(never.take_timeout(Duration::from_millis(1)), None);
    }
}
