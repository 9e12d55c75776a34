//! The clock the hit path checks deadlines against.
//!
//! Expiry is a question of seconds, so the hit path reads the kernel's coarse
//! monotonic clock (a few nanoseconds, millisecond resolution) instead of the
//! precise one (tens of nanoseconds in a VM). Both count from the same origin
//! on Linux; elsewhere the precise clock is used.

use std::time::Duration;

/// Nanoseconds on the monotonic clock; `u64::MAX` stands for "never".
pub(crate) type Nanos = u64;

pub(crate) const NEVER: Nanos = u64::MAX;

#[cfg(target_os = "linux")]
#[inline]
pub(crate) fn now() -> Nanos {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE is
    // supported by every Linux since 2.6.32 and cannot fail with valid input.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
#[inline]
pub(crate) fn now() -> Nanos {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(NEVER - 1)
}

/// The deadline `timeout` from now (`NEVER` for no timeout).
pub(crate) fn deadline(timeout: Option<Duration>) -> Nanos {
    match timeout {
        Some(t) => now().saturating_add(u64::try_from(t.as_nanos()).unwrap_or(NEVER - 1)),
        None => NEVER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward_and_deadlines_lie_ahead() {
        let a = now();
        let d = deadline(Some(Duration::from_secs(1)));
        assert!(d > a);
        assert!(now() >= a);
        assert_eq!(deadline(None), NEVER);
    }
}
