//! The recorder: a stack of frames per thread, each collecting what one
//! computation read ([`Reads`]). Futures carry their frame with them and
//! install it for the duration of each poll, so recording follows a task
//! across `.await` points and worker threads; [`Frame`] carries a frame into
//! work the computation spawns on other tasks and threads.
//!
//! A frame's reads always reach the enclosing frame, whatever happens: when
//! the computation finishes, when it panics (the panic unwinds through the
//! frame) and when its future is dropped unfinished (cancellation).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use crate::dep::{Dep, Kind};
use crate::entry::Entry;
use crate::trackable::{Models, Trackable};

thread_local! {
    static FRAMES: RefCell<Vec<Open>> = const { RefCell::new(Vec::new()) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The ids of the futures being polled on this thread, outermost first
    /// (those that lead a single flight; see [`frame_id`]).
    static POLLING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// What a computation read: the dependencies it read fresh (valid against
/// `basis`), and the entries whose values it used. See
/// [`protocol`](crate::protocol).
#[derive(Clone)]
pub(crate) struct Reads {
    pub(crate) deps: Vec<Dep>,
    pub(crate) hits: Vec<Arc<dyn Entry>>,
    /// The tick the fresh reads are valid against; `u64::MAX` for none yet.
    pub(crate) basis: u64,
}

impl Default for Reads {
    fn default() -> Self {
        Reads {
            deps: Vec::new(),
            hits: Vec::new(),
            basis: u64::MAX,
        }
    }
}

impl std::fmt::Debug for Reads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads")
            .field("deps", &self.deps)
            .field("hits", &self.hits.len())
            .field("basis", &self.basis)
            .finish()
    }
}

/// Hits kept before duplicates are folded away.
const HITS_BEFORE_DEDUP: usize = 64;

impl Reads {
    /// The reads of a computation starting now.
    pub(crate) fn starting_now() -> Self {
        Reads {
            basis: crate::versions::versions().now(),
            ..Reads::default()
        }
    }

    /// Reads of `deps` made at `basis` (a value written, not computed).
    pub(crate) fn of(deps: Vec<Dep>, basis: u64) -> Self {
        Reads {
            deps,
            hits: Vec::new(),
            basis,
        }
    }

    /// Takes in another computation's reads: this one used what it used.
    pub(crate) fn merge(&mut self, other: Reads) {
        self.basis = self.basis.min(other.basis);
        self.deps.extend(other.deps);
        for hit in other.hits {
            self.hit(hit);
        }
    }

    /// Records that the value of `entry` was used.
    pub(crate) fn hit(&mut self, entry: Arc<dyn Entry>) {
        if self.hits.last().is_some_and(|h| h.id() == entry.id()) {
            return;
        }
        self.hits.push(entry);
        let n = self.hits.len();
        if n >= HITS_BEFORE_DEDUP && n.is_power_of_two() {
            self.hits.sort_unstable_by_key(|h| h.id());
            self.hits.dedup_by_key(|h| h.id());
        }
    }

    /// Every dependency: the fresh reads' and the hits', sorted, without
    /// duplicates.
    pub(crate) fn all_deps(&self) -> Box<[Dep]> {
        let mut all = self.deps.clone();
        for hit in &self.hits {
            all.extend_from_slice(hit.deps());
        }
        normalize(all)
    }

    /// The oldest tick anything read here is valid against (the hits'
    /// own bases included): an entry built from these reads keeps it.
    pub(crate) fn oldest_basis(&self) -> u64 {
        self.hits
            .iter()
            .map(|h| h.basis())
            .fold(self.basis, u64::min)
    }
}

/// One open frame: its reads, and the sink other tasks and threads record
/// into for it (see [`Frame`]).
#[derive(Default)]
struct Open {
    reads: Reads,
    sink: Option<Arc<Sink>>,
}

impl Open {
    fn starting_now() -> Self {
        Open {
            reads: Reads::starting_now(),
            sink: None,
        }
    }

    /// Its reads, with what other tasks and threads sent to it. After this,
    /// what they send is not part of the computation any more.
    fn finish(self) -> Reads {
        let mut reads = self.reads;
        if let Some(sink) = self.sink {
            if let Some(more) = sink.close() {
                reads.merge(more);
            }
        }
        reads
    }
}

/// Reads sent to a frame from other tasks and threads; `None` once the
/// frame has closed.
struct Sink(Mutex<Option<Reads>>);

impl Sink {
    fn send(&self, reads: Reads) -> bool {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match open.as_mut() {
            Some(into) => {
                into.merge(reads);
                true
            }
            None => false,
        }
    }

    fn close(&self) -> Option<Reads> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
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

fn with_top(f: impl FnOnce(&mut Reads)) {
    FRAMES.with(|frames| {
        if let Some(top) = frames.borrow_mut().last_mut() {
            f(&mut top.reads);
        }
    });
}

/// Records `dep` in the innermost frame, if any.
#[inline]
pub fn track_dep(dep: Dep) {
    if recording() {
        with_top(|r| r.deps.push(dep));
    }
}

/// Records every dependency in `deps` in the innermost frame, if any.
pub fn track_deps(deps: &[Dep]) {
    if recording() && !deps.is_empty() {
        with_top(|r| r.deps.extend_from_slice(deps));
    }
}

/// Records that the innermost frame used the value of `entry` (a hit).
#[inline]
pub(crate) fn track_hit(entry: Arc<dyn Entry>) {
    if recording() {
        with_top(|r| r.hit(entry));
    }
}

/// Passes a finished computation's reads to the innermost frame, if any.
pub(crate) fn track_reads(reads: Reads) {
    if recording() {
        with_top(|r| r.merge(reads));
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

fn push(open: Open, id: u64) {
    FRAMES.with(|fr| fr.borrow_mut().push(open));
    DEPTH.with(|d| d.set(d.get() + 1));
    if id != 0 {
        POLLING.with(|p| p.borrow_mut().push(id));
    }
}

fn pop(id: u64) -> Open {
    let popped = FRAMES.with(|f| f.borrow_mut().pop());
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    if id != 0 {
        POLLING.with(|p| p.borrow_mut().pop());
    }
    popped.unwrap_or_default()
}

/// Where a frame's reads go when the computation unwinds through it.
enum Unwind {
    /// The enclosing frame on this thread.
    Enclosing,
    /// A frame elsewhere (see [`Frame`]).
    Sink(Arc<Sink>),
}

/// Closes the frame it guards if the computation panics, and passes its
/// reads on: the caller catching the panic depends on what was read.
struct PanicGuard {
    id: u64,
    unwind: Option<Unwind>,
}

impl PanicGuard {
    fn disarm(mut self) {
        self.unwind = None;
    }
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        let Some(unwind) = self.unwind.take() else {
            return;
        };
        let reads = pop(self.id).finish();
        match unwind {
            Unwind::Enclosing => track_reads(reads),
            Unwind::Sink(sink) => {
                sink.send(reads);
            }
        }
    }
}

/// Runs `f` in `open`, put back into `open` afterwards; `id` (when not 0)
/// names the future being polled.
fn run_in<R>(open: &mut Open, id: u64, unwind: Unwind, f: impl FnOnce() -> R) -> R {
    push(std::mem::take(open), id);
    let guard = PanicGuard {
        id,
        unwind: Some(unwind),
    };
    let value = f();
    guard.disarm();
    *open = pop(id);
    value
}

/// Runs `f` in a fresh frame; returns its value and what it read, without
/// passing them on (on a panic they are passed to the enclosing frame).
pub(crate) fn capture_reads<R>(f: impl FnOnce() -> R) -> (R, Reads) {
    let mut open = Open::starting_now();
    let value = run_in(&mut open, 0, Unwind::Enclosing, f);
    (value, open.finish())
}

/// Sorts and de-duplicates recorded dependencies.
pub(crate) fn normalize(mut deps: Vec<Dep>) -> Box<[Dep]> {
    deps.sort_unstable();
    deps.dedup();
    deps.into_boxed_slice()
}

/// Runs `f` in a fresh frame and returns its value with the dependencies it
/// recorded (sorted, without duplicates). Those dependencies are also passed on
/// to the enclosing frame, as a nested cached computation's would be (also
/// when `f` panics).
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
    let (value, reads) = capture_reads(f);
    let deps = reads.all_deps();
    track_reads(reads);
    (value, deps)
}

/// What a computation read, from [`record`] or [`record_future`]: what
/// [`Cache::insert_recorded`](crate::Cache::insert_recorded) needs to store a
/// value only if it is still fresh.
#[derive(Clone, Debug)]
pub struct Recorded(pub(crate) Reads);

impl Recorded {
    /// The dependencies, sorted, without duplicates.
    pub fn deps(&self) -> Box<[Dep]> {
        self.0.all_deps()
    }
}

/// Runs `f` in a fresh frame and returns its value with what it read, for
/// [`Cache::insert_recorded`](crate::Cache::insert_recorded). The reads are
/// also passed on to the enclosing frame, as [`capture`] does.
///
/// ```
/// use ultracache::{record, track, Cache, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// static TITLES: Cache<i64, String> = Cache::new("titles-recorded");
/// let (title, read) = record(|| { track(&Post { id: 1 }); "Hello".to_owned() });
/// assert!(TITLES.insert_recorded(1, title, &read));
/// assert_eq!(read.deps()[0].to_string(), "Post:1");
/// ```
pub fn record<R>(f: impl FnOnce() -> R) -> (R, Recorded) {
    let (value, reads) = capture_reads(f);
    track_reads(reads.clone());
    (value, Recorded(reads))
}

/// The frame of a future that records, kept between polls. Dropped before
/// the future finished (cancellation), it passes what was read so far to the
/// frame that drops it.
struct FutureFrame {
    open: Option<Open>,
    id: u64,
}

impl FutureFrame {
    fn new(id: u64) -> Self {
        FutureFrame {
            open: Some(Open::starting_now()),
            id,
        }
    }

    fn poll<F: Future>(
        &mut self,
        inner: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<(F::Output, Reads)> {
        let Some(open) = self.open.as_mut() else {
            panic!("a recording future was polled after completion");
        };
        match run_in(open, self.id, Unwind::Enclosing, || inner.poll(cx)) {
            Poll::Ready(value) => {
                let reads = self.open.take().map(Open::finish).unwrap_or_default();
                Poll::Ready((value, reads))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for FutureFrame {
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            track_reads(open.finish());
        }
    }
}

pin_project_lite::pin_project! {
    /// A future that records what it reads in its own frame, across `.await`
    /// points and whichever thread polls it; see [`capture_future`]. Dropped
    /// unfinished, it passes what it read so far to the frame that drops it.
    #[must_use = "futures do nothing unless polled"]
    pub struct Captured<F> {
        #[pin]
        inner: F,
        frame: FutureFrame,
    }
}

impl<F: Future> Future for Captured<F> {
    type Output = (F::Output, Box<[Dep]>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.frame.poll(this.inner, cx).map(|(value, reads)| {
            let deps = reads.all_deps();
            track_reads(reads);
            (value, deps)
        })
    }
}

pin_project_lite::pin_project! {
    /// A future that records what it reads; see [`record_future`].
    #[must_use = "futures do nothing unless polled"]
    pub struct RecordedFuture<F> {
        #[pin]
        inner: F,
        frame: FutureFrame,
    }
}

impl<F: Future> Future for RecordedFuture<F> {
    type Output = (F::Output, Recorded);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.frame.poll(this.inner, cx).map(|(value, reads)| {
            track_reads(reads.clone());
            (value, Recorded(reads))
        })
    }
}

pin_project_lite::pin_project! {
    /// A future that records what it reads and hands the reads to the cache
    /// (which passes on either its entry or the reads).
    pub(crate) struct Computing<F> {
        #[pin]
        inner: F,
        frame: FutureFrame,
    }
}

impl<F: Future> Future for Computing<F> {
    type Output = (F::Output, Reads);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.frame.poll(this.inner, cx)
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
    Captured {
        inner: fut,
        frame: FutureFrame::new(0),
    }
}

/// The async form of [`record`].
///
/// ```
/// # async fn demo() {
/// use ultracache::{record_future, track, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let (_, read) = record_future(async { track(&Post { id: 5 }) }).await;
/// assert_eq!(read.deps().len(), 1);
/// # }
/// ```
pub fn record_future<F: Future>(fut: F) -> RecordedFuture<F> {
    RecordedFuture {
        inner: fut,
        frame: FutureFrame::new(0),
    }
}

/// A recording future for the future with frame id `id` (see [`frame_id`]),
/// whose reads are not passed on.
pub(crate) fn computing<F: Future>(id: u64, fut: F) -> Computing<F> {
    Computing {
        inner: fut,
        frame: FutureFrame::new(id),
    }
}

/// Opens a frame on this thread; [`pop_frame`] closes it. Frames opened this
/// way must be closed in reverse order on the same thread.
pub(crate) fn push_frame() {
    push(Open::starting_now(), 0);
}

/// Closes the innermost frame and returns what it read.
pub(crate) fn pop_frame() -> Reads {
    pop(0).finish()
}

/// The frame a computation records into, carried to the tasks and threads it
/// spawns, as tracing carries a span: reads made in [`in_scope`] or in a
/// future wrapped by [`FrameExt::in_frame`] count as reads of the
/// computation that was running where [`Frame::current`] was called.
///
/// Reads reach the computation until it finishes: join or await spawned
/// work before returning (as scoped threads and awaited handles do). Reads
/// on a task or thread spawned without its frame are **not recorded**.
///
/// [`in_scope`]: Frame::in_scope
///
/// ```
/// use ultracache::{capture, track, Frame, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let ((), deps) = capture(|| {
///     let frame = Frame::current();
///     std::thread::scope(|s| {
///         s.spawn(|| frame.in_scope(|| track(&Post { id: 1 })));
///         s.spawn(|| frame.in_scope(|| track(&Post { id: 2 })));
///     });
/// });
/// assert_eq!(deps.len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct Frame {
    sink: Option<Arc<Sink>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("recording", &self.is_recording())
            .finish()
    }
}

impl Frame {
    /// The innermost frame recording on this thread (one that records
    /// nothing outside a cached computation).
    pub fn current() -> Frame {
        if !recording() {
            return Frame::default();
        }
        let sink = FRAMES.with(|frames| {
            frames.borrow_mut().last_mut().map(|top| {
                Arc::clone(
                    top.sink
                        .get_or_insert_with(|| Arc::new(Sink(Mutex::new(Some(Reads::default()))))),
                )
            })
        });
        Frame { sink }
    }

    /// Whether reads in this frame are recorded for a computation.
    pub fn is_recording(&self) -> bool {
        self.sink.is_some()
    }

    /// Runs `f`, its reads recorded into this frame (also when it panics).
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(sink) = &self.sink else {
            return f();
        };
        let mut open = Open::starting_now();
        let value = run_in(&mut open, 0, Unwind::Sink(Arc::clone(sink)), f);
        sink.send(open.finish());
        value
    }
}

pin_project_lite::pin_project! {
    /// A future whose reads are recorded into a [`Frame`]; see
    /// [`FrameExt::in_frame`].
    #[must_use = "futures do nothing unless polled"]
    pub struct InFrame<F> {
        #[pin]
        inner: F,
        frame: Frame,
    }
}

impl<F: Future> Future for InFrame<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        this.frame.in_scope(|| inner.poll(cx))
    }
}

/// Carries a [`Frame`] into a future that runs elsewhere (`tokio::spawn`, a
/// `JoinSet`, another executor).
///
/// ```
/// # async fn demo() {
/// use ultracache::{capture_future, track, FrameExt, Trackable};
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let (_, deps) = capture_future(async {
///     let task = tokio::spawn(async { track(&Post { id: 1 }) }.in_current_frame());
///     task.await.unwrap();
/// })
/// .await;
/// assert_eq!(deps.len(), 1);
/// # }
/// ```
pub trait FrameExt: Future + Sized {
    /// Records this future's reads into `frame`.
    fn in_frame(self, frame: Frame) -> InFrame<Self> {
        InFrame { inner: self, frame }
    }

    /// Records this future's reads into the frame recording here and now.
    fn in_current_frame(self) -> InFrame<Self> {
        self.in_frame(Frame::current())
    }
}

impl<F: Future> FrameExt for F {}
