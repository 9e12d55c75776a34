//! Entries as the registry and the stores see them: type-erased handles to a
//! cached value and the dependencies it was computed from.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::dep::{Dep, Kind};
use crate::mark::Mark;
pub(crate) use crate::state::{Cause, State};

/// A cached value, seen without its types.
pub(crate) trait Entry: Send + Sync + 'static {
    /// Unique among the entries alive: a cache's slot is numbered by its
    /// address. Whatever keeps an id to find its entry by (the registry,
    /// a store, a front map) holds the entry too, so no other entry takes
    /// that number meanwhile.
    fn id(&self) -> u64;
    /// What it was computed from (sorted, without duplicates).
    fn deps(&self) -> &[Dep];
    /// Its weight for a store bounded in bytes.
    fn weight(&self) -> u32;
    /// Removes it everywhere: its cache, its store and the registry. Idempotent.
    fn kill(&self, cause: Cause);
    /// Where it is in its life (see [`protocol`](crate::protocol)).
    fn state(&self) -> &State;
    /// Its place in its store's policy.
    fn mark(&self) -> &Mark;
    /// Its store dropped its tombstone: whatever of it lingers elsewhere
    /// (its place in its cache's map) goes too.
    fn bury(&self) {}
    /// The oldest tick its value's reads are valid against.
    fn basis(&self) -> u64;
    /// Itself, to be seen as its own type again.
    fn as_any(&self) -> &dyn std::any::Any;
    /// The cache it belongs to, as an address: entries with the same owner
    /// are of one type, and end together in [`invalidate_batch`](Self::invalidate_batch).
    /// Zero when it has none to share.
    fn owner(&self) -> usize {
        0
    }
    /// Ends every entry of `batch` (entries with this one's
    /// [`owner`](Self::owner)) for an invalidation of `taken`, whose links
    /// the registry has dropped already: one pass over their cache, where
    /// [`kill`](Self::kill) would make one per entry. Every entry ends even
    /// if an `on_invalidated` hook panics; the first panic is returned.
    fn invalidate_batch(&self, batch: &[Arc<dyn Entry>], taken: Taken<'_>) -> Option<Panic> {
        let _ = taken;
        each_catching(batch, |entry| entry.kill(Cause::Invalidated))
    }
}

/// What a panic carries.
pub(crate) type Panic = Box<dyn std::any::Any + Send>;

/// Runs `f` on every item even if some panic (a user's `on_invalidated`
/// hook runs when an entry ends); the first panic is returned.
pub(crate) fn each_catching<T>(
    items: impl IntoIterator<Item = T>,
    mut f: impl FnMut(T),
) -> Option<Panic> {
    let mut first = None;
    for item in items {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(item))) {
            first.get_or_insert(p);
        }
    }
    first
}

/// [`each_catching`], then goes on with the first panic.
pub(crate) fn each_then_unwind<T>(items: impl IntoIterator<Item = T>, f: impl FnMut(T)) {
    if let Some(p) = each_catching(items, f) {
        std::panic::resume_unwind(p);
    }
}

/// What an invalidation took out of the registry before ending its
/// entries: their links under it are gone already.
#[derive(Clone, Copy)]
pub(crate) enum Taken<'a> {
    /// One dependency.
    Dep(&'a Dep),
    /// Every dependency of a kind.
    Kind(Kind),
}

impl Taken<'_> {
    /// Whether the links of `dep` were taken.
    pub(crate) fn covers(&self, dep: &Dep) -> bool {
        match self {
            Taken::Dep(taken) => *taken == dep,
            Taken::Kind(kind) => dep.model_kind() == *kind,
        }
    }
}

/// Ends `entries` for an invalidation of `taken`, a batch per run of
/// entries of one cache. Every entry ends even if a hook panics; the first
/// panic is kept in `panic`.
pub(crate) fn invalidate_all(
    entries: &[Arc<dyn Entry>],
    taken: Taken<'_>,
    panic: &mut Option<Panic>,
) {
    let mut rest = entries;
    while let Some(first) = rest.first() {
        let owner = first.owner();
        let run = if owner == 0 {
            1
        } else {
            rest.iter().take_while(|e| e.owner() == owner).count()
        };
        let (batch, next) = rest.split_at(run);
        if let Some(p) = first.invalidate_batch(batch, taken) {
            panic.get_or_insert(p);
        }
        rest = next;
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Relaxed)
}
