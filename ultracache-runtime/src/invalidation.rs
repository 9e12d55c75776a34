//! Invalidation: writing an object drops exactly the entries computed from
//! it. Each call versions the dependencies first (so computations in flight
//! are not stored) and then drops the registered entries, following the
//! [`protocol`]; when it returns, no read can return a value
//! computed from the old data.

use std::borrow::Borrow;

use crate::dep::{Dep, Kind};
use crate::paths::path_dep;
use crate::protocol::{self, Target};
use crate::registry::registry;
use crate::runtime;
use crate::stats::Stats;
use crate::trackable::Trackable;

/// Drops every entry that depends on `obj`, or on its kind (lists and lookups
/// that may now include it), and every page at its
/// [`dependent_paths`](crate::DependentPaths). Returns how many entries were
/// dropped.
///
/// ```
/// use ultracache::{cached, invalidate, tracks, Trackable};
///
/// #[derive(Clone, Trackable)]
/// struct Post { id: i64, title: String }
///
/// #[tracks]
/// fn load(id: i64) -> Post { Post { id, title: format!("post {id}") } }
///
/// #[cached(timeout = 60)]
/// fn title(id: i64) -> String { load(id).title }
///
/// title(1);
/// assert_eq!(invalidate(&Post { id: 1, title: String::new() }), 1);
/// ```
pub fn invalidate<T: Trackable + ?Sized>(obj: &T) -> usize {
    invalidate_deps(&written(obj))
}

/// Starts a write of `obj` made outside `#[invalidates]`
/// and the database integrations (raw SQL, another client library): call it
/// before the write, and [`Writing::done`] once the write committed.
///
/// A committed write is visible to other readers before the invalidation
/// after it runs; without the hold, a reader in between — which may have
/// read the new row itself — could be served the copy computed from the old
/// one. From this call until `done`, this process's copies of what `obj`
/// names are gone and a computation that read it is served to its caller
/// but not stored (nor taken from the shared tier). `done` then invalidates
/// as [`invalidate`] does, everywhere, and ends the hold. Dropped without
/// `done` (the write failed, or the caller gave up), the hold ends after
/// dropping this process's copies again.
///
/// ```
/// use ultracache::{writing, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let post = Post { id: 7 };
/// let write = writing(&post);
/// // … UPDATE posts SET … WHERE id = 7, committed …
/// write.done();
/// ```
pub fn writing<T: Trackable + ?Sized>(obj: &T) -> Writing {
    let deps = written(obj);
    Writing {
        held: HeldCommit::begin(deps.clone(), Vec::new()),
        deps,
    }
}

/// A write in progress: see [`writing`].
#[derive(Debug)]
#[must_use = "a write's hold ends, without invalidating everywhere, when this is dropped: call `done`"]
pub struct Writing {
    held: std::sync::Arc<HeldCommit>,
    deps: Vec<Dep>,
}

impl Writing {
    /// The write committed: invalidates what it wrote (everywhere, as
    /// [`invalidate`]), then ends the hold. Returns how many entries were
    /// dropped here.
    pub fn done(self) -> usize {
        let n = invalidate_deps(&self.deps);
        self.held.end(true);
        n
    }

    /// The async form of [`done`](Self::done).
    pub async fn done_async(self) -> usize {
        let n = invalidate_deps_async(&self.deps).await;
        self.held.end(true);
        n
    }
}

/// What writing `obj` invalidates: the object, its kind, its pages.
pub(crate) fn written<T: Trackable + ?Sized>(obj: &T) -> Vec<Dep> {
    let mut deps = vec![obj.dep(), Dep::kind(T::KIND)];
    deps.extend(obj.dependent_paths().iter().map(|p| path_dep(p)));
    deps
}

/// Drops every entry that depends on the `T` with this id, or on the kind `T`:
/// for when only the id is at hand (a delete by id).
///
/// ```
/// use ultracache::{invalidate_id, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// invalidate_id::<Post>(42);
/// ```
pub fn invalidate_id<T: Trackable + ?Sized>(id: impl Borrow<T::Id>) -> usize {
    invalidate_deps(&[Dep::object(T::KIND, id.borrow()), Dep::kind(T::KIND)])
}

/// Drops every entry that depends on any `T` at all: each object of the kind
/// and the kind itself (a bulk update).
///
/// ```
/// use ultracache::{invalidate_kind, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// invalidate_kind::<Post>();
/// ```
pub fn invalidate_kind<T: Trackable + ?Sized>() -> usize {
    invalidate_any_of(T::KIND)
}

/// Like [`invalidate_kind`], by kind.
pub fn invalidate_any_of(kind: Kind) -> usize {
    if let Some(queue) = crate::transaction::open() {
        queue.push(&[], &[kind]);
        return 0;
    }
    forward(&[], &[kind]);
    invalidate_local(&[], &[kind])
}

/// Drops every entry that depends on any of `deps` (exactly those: a kind
/// dependency here means "the kind itself", not every object of it).
pub fn invalidate_deps(deps: &[Dep]) -> usize {
    if let Some(queue) = crate::transaction::open() {
        // Inside a database transaction: applied when it commits.
        queue.push(deps, &[]);
        return 0;
    }
    forward(deps, &[]);
    invalidate_local(deps, &[])
}

/// The async form of [`invalidate_deps`]: waits for the shared tier (when
/// one is configured) without blocking a thread.
pub async fn invalidate_deps_async(deps: &[Dep]) -> usize {
    if let Some(queue) = crate::transaction::open() {
        queue.push(deps, &[]);
        return 0;
    }
    invalidate_deps_stamped_async(deps).await.0
}

/// Applies what a transaction queued, now that it committed: the shared
/// tier and every node first, then this process.
#[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
pub(crate) async fn apply_committed(deps: &[Dep], kinds: &[Kind]) -> usize {
    if deps.is_empty() && kinds.is_empty() {
        return 0;
    }
    crate::listen::invalidating(deps, kinds);
    #[cfg(feature = "redis")]
    if let Some(tier) = runtime::get().tier() {
        tier.invalidate_async(deps, kinds).await;
    }
    invalidate_local(deps, kinds)
}

/// The blocking form of [`apply_committed`], for a commit seen on a thread
/// outside the async runtime (SQLite's WAL hook).
#[cfg(feature = "sqlite")]
pub(crate) fn apply_committed_blocking(deps: &[Dep], kinds: &[Kind]) -> usize {
    if deps.is_empty() && kinds.is_empty() {
        return 0;
    }
    forward(deps, kinds);
    invalidate_local(deps, kinds)
}

/// A commit's changes held from before the commit is visible to other
/// connections until they are applied after it is: SQLite's commit hook
/// then its WAL hook, or [`db::Transaction::commit`](crate::db::Transaction::commit)
/// around the database's commit.
///
/// Without it a reader could read the new rows in between and still be
/// served a copy computed from the old ones, which the commit's
/// invalidation is about to drop. [`begin`](Self::begin) holds the changes
/// (see [`Versions::hold`](crate::versions::Versions::hold)) and drops this
/// process's copies: until [`end`](Self::end), a computation that read them
/// — before the commit or after, it cannot tell — is served to its caller
/// but never stored, and a copy in the shared tier is a miss here. Other
/// nodes hear of the commit when it is applied (eventual, unless the
/// invalidation is acknowledged).
#[derive(Debug)]
pub(crate) struct HeldCommit {
    hold: crate::versions::Hold,
    deps: Vec<Dep>,
    kinds: Vec<Kind>,
    ended: std::sync::atomic::AtomicBool,
}

impl HeldCommit {
    /// Holds `deps` and whole `kinds`, then drops this process's entries
    /// for them.
    pub(crate) fn begin(deps: Vec<Dep>, kinds: Vec<Kind>) -> std::sync::Arc<Self> {
        let hold = crate::versions::versions().hold(&deps, &kinds);
        invalidate_local(&deps, &kinds);
        std::sync::Arc::new(HeldCommit {
            hold,
            deps,
            kinds,
            ended: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the hold ended.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Ends the hold (once). `applied` says the changes were invalidated
    /// since the commit became visible (or it rolled back); if not, they
    /// are invalidated in this process first, so that a computation that
    /// read the old rows is refused once the hold is gone.
    pub(crate) fn end(&self, applied: bool) {
        if self.ended.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if !applied {
            invalidate_local(&self.deps, &self.kinds);
        }
        crate::versions::versions().release(&self.hold);
    }
}

impl Drop for HeldCommit {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// [`invalidate_deps`], with the shared tier's tick for it (when Redis took
/// it: a value written after it is stored there unless a later write came)
/// and this process's (a value written against it is stored here unless a
/// later invalidation came).
pub(crate) fn invalidate_deps_stamped(deps: &[Dep]) -> (usize, Option<u64>, u64) {
    let tick = forward(deps, &[]);
    let (n, local) = invalidate_local_stamped(deps, &[]);
    (n, tick, local)
}

/// The async form of [`invalidate_deps_stamped`].
pub(crate) async fn invalidate_deps_stamped_async(deps: &[Dep]) -> (usize, Option<u64>, u64) {
    crate::listen::invalidating(deps, &[]);
    #[cfg(feature = "redis")]
    let tick = match runtime::get().tier() {
        Some(tier) => tier.invalidate_async(deps, &[]).await,
        None => None,
    };
    #[cfg(not(feature = "redis"))]
    let tick = None;
    let (n, local) = invalidate_local_stamped(deps, &[]);
    (n, tick, local)
}

/// The async form of [`invalidate`] (same dependencies): the shared tier
/// (when one is configured) is told without blocking a thread.
///
/// ```
/// # async fn demo() {
/// use ultracache::{invalidate_async, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// invalidate_async(&Post { id: 7 }).await;
/// # }
/// ```
pub async fn invalidate_async<T: Trackable + ?Sized>(obj: &T) -> usize {
    invalidate_deps_async(&written(obj)).await
}

/// Tells the listeners (the purgers), then the shared tier (its entries go,
/// and every node hears of it), so that no read on this node can bring an old
/// entry back from Redis after the local entries are dropped.
fn forward(deps: &[Dep], kinds: &[Kind]) -> Option<u64> {
    crate::listen::invalidating(deps, kinds);
    #[cfg(feature = "redis")]
    return runtime::get()
        .tier()
        .and_then(|tier| tier.invalidate(deps, kinds));
    #[cfg(not(feature = "redis"))]
    None
}

/// Drops every entry that depends on one of these paths: every cached
/// response for them (all methods, all variants), and whatever nests them.
///
/// ```
/// ultracache::invalidate_paths(["/", "/posts/hello"]);
/// ```
pub fn invalidate_paths<I, S>(paths: I) -> usize
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let deps: Vec<Dep> = paths.into_iter().map(|p| path_dep(p.as_ref())).collect();
    if deps.is_empty() {
        0
    } else {
        invalidate_deps(&deps)
    }
}

/// Drops this process's entries for `deps` and for whole `kinds`.
pub(crate) fn invalidate_local(deps: &[Dep], kinds: &[Kind]) -> usize {
    invalidate_local_stamped(deps, kinds).0
}

/// [`invalidate_local`], with the tick of the new versions.
pub(crate) fn invalidate_local_stamped(deps: &[Dep], kinds: &[Kind]) -> (usize, u64) {
    crate::telemetry::drops_batched(|| invalidate_now(deps, kinds))
}

fn invalidate_now(deps: &[Dep], kinds: &[Kind]) -> (usize, u64) {
    protocol::invalidate(
        crate::versions::versions(),
        registry(),
        deps,
        kinds,
        |target, n| match target {
            Target::Dep(dep) => crate::telemetry::invalidated(dep, n),
            Target::Kind(kind) => crate::telemetry::invalidated_kind(kind.name(), n),
        },
    )
}

#[cfg(feature = "redis")]
impl crate::tier::MemoryTier {
    /// Another node writes `deps`: they are invalidated in the tier, and
    /// this node hears of it as it would from Redis. Returns how many of
    /// this node's entries were dropped.
    pub fn invalidate_from_another_node(&self, deps: &[Dep]) -> usize {
        self.invalidate_in_tier(deps);
        invalidate_local(deps, &[])
    }
}

/// Drops every entry of every cache and store, and of the shared tier.
pub fn clear() {
    #[cfg(feature = "redis")]
    if let Some(tier) = runtime::get().tier() {
        tier.clear();
    }
    clear_local();
}

/// Drops every entry of the store named `name` (in this process), and
/// nothing else; `false` when no such store is configured.
///
/// ```
/// assert!(ultracache::clear_store("default"));
/// assert!(!ultracache::clear_store("no-such-store"));
/// ```
pub fn clear_store(name: &str) -> bool {
    match runtime::get().store(Some(name)) {
        Some(store) => {
            // Computations in flight for this store are not stored.
            let tick = crate::versions::versions().next();
            crate::sync::raise_u64(&store.cleared, tick);
            store.clear();
            true
        }
        None => false,
    }
}

/// Drops every entry of this process.
pub(crate) fn clear_local() {
    crate::versions::versions().stamp_all();
    let rt = runtime::get();
    // Every store and cache is cleared even if an `on_invalidated` hook
    // panics; the first panic goes on after.
    crate::entry::each_then_unwind(
        rt.stores().map(Ok).chain(rt.caches().into_iter().map(Err)),
        |target| match target {
            Ok(store) => store.clear(),
            Err(cache) => cache.clear(),
        },
    );
}

/// Performs pending maintenance now: entries past their timeout are
/// removed and leave the registry, and the memory of entries that ended
/// (invalidated, replaced, expired) returns. (It happens on its own as
/// caches are used; call it before reading statistics.)
pub fn run_pending_tasks() {
    let rt = runtime::get();
    for cache in rt.caches() {
        cache.sweep_expired();
    }
    for store in rt.stores() {
        store.sweep();
    }
}

/// How many entries depend on `dep` now.
pub fn dependents(dep: &Dep) -> usize {
    registry().dependents(dep)
}

/// Statistics of every cache used so far, and of the registry.
///
/// ```
/// let stats = ultracache::stats();
/// println!("{} entries, {} dependencies", stats.entries, stats.dependencies);
/// ```
pub fn stats() -> Stats {
    let caches: Vec<_> = runtime::get().caches().iter().map(|c| c.stats()).collect();
    Stats {
        entries: caches.iter().map(|c| c.entries).sum(),
        dependency_links: registry().links(),
        dependencies: registry().dependencies(),
        caches,
    }
}
