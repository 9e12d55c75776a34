//! The recorder: a stack of frames per thread, each collecting the
//! dependencies of one computation. Futures carry their frame with them and
//! install it for the duration of each poll, so recording follows a task
//! across `.await` points and worker threads.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::dep::{Dep, Kind};
use crate::trackable::{Models, Trackable};

thread_local! {
    static FRAMES: RefCell<Vec<Vec<Dep>>> = const { RefCell::new(Vec::new()) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The ids of the futures being polled on this thread, outermost first
    /// (those that lead a single flight; see [`frame_id`]).
    static POLLING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// A new id for a future's frame: a flight led by that future knows a wait
/// from inside its own poll (which would wait for itself).
pub(crate) fn frame_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Whether this thread is polling, at any depth, the future with frame `id`.
pub(crate) fn inside(id: u64) -> bool {
    POLLING.with(|p| p.borrow().contains(&id))
}

/// Whether a frame is recording on this thread (cheap: one thread-local read).
#[inline(always)]
pub(crate) fn recording() -> bool {
    DEPTH.with(Cell::get) != 0
}

/// Records `dep` in the innermost frame, if any.
#[inline]
pub fn track_dep(dep: Dep) {
    if recording() {
        FRAMES.with(|f| {
            if let Some(top) = f.borrow_mut().last_mut() {
                top.push(dep);
            }
        });
    }
}

/// Records every dependency in `deps` in the innermost frame, if any.
pub fn track_deps(deps: &[Dep]) {
    if recording() && !deps.is_empty() {
        FRAMES.with(|f| {
            if let Some(top) = f.borrow_mut().last_mut() {
                top.extend_from_slice(deps);
            }
        });
    }
}

/// Records a read of `obj`: the computation being cached now depends on it.
///
/// Outside a cached computation it does nothing.
///
/// ```
/// use ultracache::{capture, track, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let ((), deps) = capture(|| track(&Post { id: 3 }));
/// assert_eq!(deps[0].to_string(), "Post:3");
/// ```
#[inline]
pub fn track<T: Trackable + ?Sized>(obj: &T) {
    if recording() {
        track_dep(obj.dep());
    }
}

/// Records a dependency on the kind `T` itself: any write of a `T` (including
/// creating one) invalidates the computation. Use it for lists, counts and
/// lookups that found nothing.
///
/// ```
/// use ultracache::{capture, track_kind, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let ((), deps) = capture(|| track_kind::<Post>());
/// assert_eq!(deps[0].to_string(), "Post");
/// ```
#[inline]
pub fn track_kind<T: Trackable + ?Sized>() {
    if recording() {
        track_dep(Dep::kind(T::KIND));
    }
}

/// Records a read of the `T` with this id, when the object itself is not at
/// hand: a list of one post's comments depends on the post, so adding a
/// comment (which invalidates its post) refreshes it, and only it.
///
/// ```
/// use ultracache::{capture, track_id, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let ((), deps) = capture(|| track_id::<Post>(7));
/// assert_eq!(deps[0].to_string(), "Post:7");
/// ```
#[inline]
pub fn track_id<T: Trackable + ?Sized>(id: impl std::borrow::Borrow<T::Id>) {
    if recording() {
        track_dep(Dep::object(T::KIND, id.borrow()));
    }
}

/// Records every model in `value` (see [`Models`]): what `#[tracks]` does with a
/// function's return value.
pub fn track_value<M: Models + ?Sized>(value: &M) {
    if recording() {
        value.visit_deps(&mut track_dep);
    }
}

/// Records the kind `kind` itself.
pub fn track_kind_of(kind: Kind) {
    track_dep(Dep::kind(kind));
}

/// Pops the frame it pushed, even when the computation panics.
struct FrameGuard<'a> {
    deps: &'a mut Vec<Dep>,
    id: u64,
}

impl Drop for FrameGuard<'_> {
    fn drop(&mut self) {
        let popped = FRAMES.with(|f| f.borrow_mut().pop());
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        if self.id != 0 {
            POLLING.with(|p| p.borrow_mut().pop());
        }
        if let Some(popped) = popped {
            *self.deps = popped;
        }
    }
}

/// Runs `f` with `deps` as the innermost frame, collecting into it; `id`
/// (when not 0) names the future being polled.
fn in_frame<R>(deps: &mut Vec<Dep>, id: u64, f: impl FnOnce() -> R) -> R {
    let taken = std::mem::take(deps);
    FRAMES.with(|fr| fr.borrow_mut().push(taken));
    DEPTH.with(|d| d.set(d.get() + 1));
    if id != 0 {
        POLLING.with(|p| p.borrow_mut().push(id));
    }
    let _guard = FrameGuard { deps, id };
    f()
}

/// Sorts and de-duplicates recorded dependencies.
pub(crate) fn normalize(mut deps: Vec<Dep>) -> Box<[Dep]> {
    deps.sort_unstable();
    deps.dedup();
    deps.into_boxed_slice()
}

/// Runs `f` in a fresh frame and returns its value with the dependencies it
/// recorded (sorted, without duplicates). Those dependencies are also passed on
/// to the enclosing frame, as a nested cached computation's would be.
///
/// ```
/// use ultracache::{capture, track, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let (n, deps) = capture(|| { track(&Post { id: 2 }); track(&Post { id: 1 }); 7 });
/// assert_eq!(n, 7);
/// let names: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
/// assert_eq!(names, ["Post:1", "Post:2"]);
/// ```
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Box<[Dep]>) {
    let mut deps = Vec::new();
    let value = in_frame(&mut deps, 0, f);
    let deps = normalize(deps);
    track_deps(&deps);
    (value, deps)
}

pin_project_lite::pin_project! {
    /// A future that records what it reads in its own frame, across `.await`
    /// points and whichever thread polls it; see [`capture_future`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Captured<F> {
        #[pin]
        inner: F,
        deps: Vec<Dep>,
        id: u64,
    }
}

impl<F: Future> Future for Captured<F> {
    type Output = (F::Output, Box<[Dep]>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        match in_frame(this.deps, *this.id, || inner.poll(cx)) {
            Poll::Ready(value) => {
                let deps = normalize(std::mem::take(this.deps));
                track_deps(&deps);
                Poll::Ready((value, deps))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The async form of [`capture`]: the future's reads, on whatever thread each
/// poll runs, are recorded in its own frame; concurrent tasks never mix.
///
/// ```
/// # async fn demo() {
/// use ultracache::{capture_future, track, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let (_, deps) = capture_future(async { track(&Post { id: 5 }) }).await;
/// assert_eq!(deps.len(), 1);
/// # }
/// ```
pub fn capture_future<F: Future>(fut: F) -> Captured<F> {
    capture_future_as(0, fut)
}

/// [`capture_future`] for the future with frame id `id` (see [`frame_id`]).
pub(crate) fn capture_future_as<F: Future>(id: u64, fut: F) -> Captured<F> {
    Captured {
        inner: fut,
        deps: Vec::new(),
        id,
    }
}

/// Opens a frame on this thread; [`pop_frame`] closes it. Frames opened this
/// way must be closed in reverse order on the same thread.
pub(crate) fn push_frame() {
    FRAMES.with(|fr| fr.borrow_mut().push(Vec::new()));
    DEPTH.with(|d| d.set(d.get() + 1));
}

/// Closes the innermost frame and returns what it recorded.
pub(crate) fn pop_frame() -> Vec<Dep> {
    let popped = FRAMES.with(|f| f.borrow_mut().pop());
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    popped.unwrap_or_default()
}
