//! The synchronization primitives of the freshness protocol: std's, or
//! loom's when the `loom` feature model-checks the protocol (see
//! `protocol::model_check`).

#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicU8};
#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(feature = "loom")]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicU8};
#[cfg(feature = "loom")]
pub(crate) use loom::sync::{Mutex, MutexGuard};

/// Locks `m`, going on past a panic of another holder (the data behind every
/// lock of the protocol stays consistent at each step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Raises `a` to at least `v` (a `fetch_max` written as a compare-exchange
/// loop, which loom models faithfully).
pub(crate) fn raise_u64(a: &AtomicU64, v: u64) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut cur = a.load(SeqCst);
    while cur < v {
        match a.compare_exchange(cur, v, SeqCst, SeqCst) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

/// [`raise_u64`] for a `u8`.
pub(crate) fn raise_u8(a: &AtomicU8, v: u8) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut cur = a.load(SeqCst);
    while cur < v {
        match a.compare_exchange(cur, v, SeqCst, SeqCst) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

/// How many shards a structure read and written from every core takes:
/// four per core, a power of two, at most 64 (asked of the system once).
pub(crate) fn core_shards() -> usize {
    static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SHARDS.get_or_init(|| {
        let parallel = std::thread::available_parallelism().map_or(4, |n| n.get());
        (4 * parallel).next_power_of_two().min(64)
    })
}
