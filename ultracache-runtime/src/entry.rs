//! Entries as the registry and the stores see them: type-erased handles to a
//! cached value and the dependencies it was computed from.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::dep::Dep;
pub(crate) use crate::state::{Cause, State};

/// A cached value, seen without its types.
pub(crate) trait Entry: Send + Sync + 'static {
    /// Unique for the life of the process.
    fn id(&self) -> u64;
    /// What it was computed from (sorted, without duplicates).
    fn deps(&self) -> &[Dep];
    /// Its weight for a store bounded in bytes.
    fn weight(&self) -> u32;
    /// Removes it everywhere: its cache, its store and the registry. Idempotent.
    fn kill(&self, cause: Cause);
    /// Where it is in its life (see [`protocol`](crate::protocol)).
    fn state(&self) -> &State;
    /// The oldest tick its value's reads are valid against.
    fn basis(&self) -> u64;
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Relaxed)
}
