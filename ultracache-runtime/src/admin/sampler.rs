//! The hit-ratio history behind the overview chart.

use super::*;

#[derive(Clone, Copy, Serialize)]
pub(super) struct Sample {
    /// Seconds since the Unix epoch.
    pub(super) at: u64,
    pub(super) hits: u64,
    pub(super) misses: u64,
}

/// How many samples of the hit ratio are kept (one every 10 s: 20 minutes).
pub(super) const HISTORY: usize = 120;

pub(super) fn totals() -> (u64, u64) {
    crate::stats()
        .caches
        .iter()
        .fold((0, 0), |(h, m), c| (h + c.hits, m + c.misses))
}

impl Admin {
    pub(super) fn sample(&self) {
        let (hits, misses) = totals();
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if history.back().is_some_and(|s| s.at == at) {
            history.pop_back();
        }
        history.push_back(Sample { at, hits, misses });
        while history.len() > HISTORY {
            history.pop_front();
        }
    }
}
