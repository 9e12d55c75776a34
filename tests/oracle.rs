//! A randomized concurrent oracle for the freshness promise: 4 threads run
//! 1,000,000 operations mixing nested cached reads (three levels, through
//! hits and single flight), writes with object and whole-kind
//! invalidations, `Cache::invalidate` and `invalidate_all`, the block API,
//! computations that panic and futures that are cancelled. Every value
//! carries the version of each object it was computed from; a read that
//! starts after the invalidation of a write returned must see that write
//! (or a later one). The test counts the reads that do not: there must be
//! none.

use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Once};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use ultracache::{invalidate_id, invalidate_kind, track_id, Cache, Lookup, Trackable};

const THREADS: usize = 4;
const OPS: usize = 1_000_000;
const OBJECTS: usize = 24;
/// A run that takes longer than this fails (a hang is a failure).
const BOUND: Duration = Duration::from_secs(600);

#[derive(Trackable)]
#[trackable(kind = "oracle.object")]
struct Object {
    id: u32,
}

/// What a value was computed from: (object, version) pairs.
type Seen = Vec<(u32, u64)>;

/// The source of truth: each object's version.
static DB: [AtomicU64; OBJECTS] = [const { AtomicU64::new(0) }; OBJECTS];
/// For each object, the newest version whose invalidation has returned.
static COMMITTED: [AtomicU64; OBJECTS] = [const { AtomicU64::new(0) }; OBJECTS];

static FRAGMENT: Cache<u32, Seen> = Cache::new("oracle.fragment");
static PAGE: Cache<u32, Seen> = Cache::new("oracle.page");
static TOP: Cache<u32, Seen> = Cache::new("oracle.top");
static FLAKY: Cache<u32, Seen> = Cache::new("oracle.flaky");
static GUARDED: Cache<u32, Seen> = Cache::new("oracle.guarded");
static ASYNC_PAGE: Cache<u32, Seen> = Cache::new("oracle.async");

fn obj(i: u32) -> u32 {
    i % OBJECTS as u32
}

/// Reads one object from the source of truth, as a loader would: read,
/// then record.
fn load(i: u32) -> (u32, u64) {
    let i = obj(i);
    let v = DB[i as usize].load(SeqCst);
    track_id::<Object>(i);
    (i, v)
}

fn fragment(i: u32) -> Seen {
    FRAGMENT.get_or_compute(obj(i), || vec![load(i)])
}

/// Two fragments (hits) and one object read directly.
fn page(p: u32) -> Seen {
    PAGE.get_or_compute(obj(p), || {
        let mut seen = fragment(p);
        seen.extend(fragment(p + 1));
        seen.push(load(p + 2));
        seen
    })
}

/// Two pages: three levels of nesting.
fn top(q: u32) -> Seen {
    TOP.get_or_compute(obj(q), || {
        let mut seen = page(q);
        seen.extend(page(q + 3));
        seen
    })
}

/// The payload of a computation that read an object and then failed.
struct Failed((u32, u64));

/// A page whose inner computation reads an object and panics; the page
/// catches the panic and shows what the failed computation had read.
fn guarded(g: u32) -> Seen {
    GUARDED.get_or_compute(obj(g), || {
        let mut seen = fragment(g + 5);
        let failed = catch_unwind(AssertUnwindSafe(|| {
            FLAKY.get_or_compute(obj(g), || {
                let read = load(g);
                panic_any(Failed(read));
            })
        }));
        match failed {
            Ok(inner) => seen.extend(inner),
            Err(payload) => match payload.downcast::<Failed>() {
                Ok(failed) => seen.push(failed.0),
                Err(other) => std::panic::resume_unwind(other),
            },
        }
        seen
    })
}

/// A future that is pending once, then ready.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

async fn async_page(a: u32) -> Seen {
    ASYNC_PAGE
        .get_or_compute_async(obj(a), async move {
            let mut seen = fragment(a);
            YieldOnce(false).await;
            seen.push(load(a + 1));
            seen
        })
        .await
}

/// Polls `fut` to completion on this thread.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let deadline = Instant::now() + BOUND;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "a future never finished");
        thread::yield_now();
    }
}

/// Polls `fut` once and drops it: a request cancelled mid-computation.
fn cancel<F: std::future::Future>(fut: F) {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let _ = fut.as_mut().poll(&mut cx);
}

/// A write: the new version, its invalidation, then it counts as committed.
fn write(i: u32) {
    let i = obj(i);
    let v = DB[i as usize].fetch_add(1, SeqCst) + 1;
    invalidate_id::<Object>(i);
    COMMITTED[i as usize].fetch_max(v, SeqCst);
}

/// A bulk update of every object, invalidated as a kind.
fn write_all() {
    let versions: Vec<u64> = DB.iter().map(|v| v.fetch_add(1, SeqCst) + 1).collect();
    invalidate_kind::<Object>();
    for (c, v) in COMMITTED.iter().zip(versions) {
        c.fetch_max(v, SeqCst);
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

/// Counts the values that were older than a write whose invalidation had
/// returned before the read started.
fn check(before: &[u64; OBJECTS], seen: &Seen, stale: &AtomicUsize) {
    for &(i, v) in seen {
        if v < before[i as usize] {
            stale.fetch_add(1, SeqCst);
        }
    }
}

fn committed() -> [u64; OBJECTS] {
    std::array::from_fn(|i| COMMITTED[i].load(SeqCst))
}

#[test]
fn no_read_returns_a_value_older_than_an_invalidation_that_returned() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Failed>() {
                default(info);
            }
        }));
    });
    let stale = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let deadline = Instant::now() + BOUND;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stale, reads, start) =
                (Arc::clone(&stale), Arc::clone(&reads), Arc::clone(&start));
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1234_5678_9abc));
                start.wait();
                for n in 0..OPS / THREADS {
                    if n.is_multiple_of(4096) {
                        assert!(Instant::now() < deadline, "the oracle run took too long");
                    }
                    let i = rng.next() % OBJECTS as u32;
                    let before = committed();
                    let seen = match rng.next() % 100 {
                        0..=34 => top(i),
                        35..=49 => page(i),
                        50..=57 => fragment(i),
                        58..=62 => guarded(i),
                        63..=66 => block_on(async_page(i)),
                        67..=68 => {
                            cancel(async_page(i));
                            continue;
                        }
                        69..=70 => match FRAGMENT.begin(i) {
                            Lookup::Hit(seen) => seen,
                            Lookup::Miss(recording) => {
                                let seen = vec![load(i)];
                                if rng.next().is_multiple_of(2) {
                                    recording.store(seen)
                                } else {
                                    drop(recording);
                                    seen
                                }
                            }
                        },
                        71..=92 => {
                            write(i);
                            continue;
                        }
                        93 => {
                            write_all();
                            continue;
                        }
                        94..=96 => {
                            FRAGMENT.invalidate(&i);
                            continue;
                        }
                        97..=98 => {
                            PAGE.invalidate(&i);
                            continue;
                        }
                        _ => {
                            TOP.invalidate_all();
                            continue;
                        }
                    };
                    reads.fetch_add(1, SeqCst);
                    check(&before, &seen, &stale);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let reads = reads.load(SeqCst);
    assert!(reads > OPS / 2, "only {reads} reads");
    assert_eq!(
        stale.load(SeqCst),
        0,
        "stale reads among {reads} after their invalidation returned"
    );
}

static TASK_PAGE: Cache<u32, Seen> = Cache::new("oracle.task.page");
static TASK_PART: Cache<u32, Seen> = Cache::new("oracle.task.part");

/// A part whose object is loaded on a spawned task that carries the frame.
async fn task_part(i: u32) -> Seen {
    use ultracache::FrameExt;
    TASK_PART
        .get_or_compute_async(obj(i), async move {
            let loaded = tokio::spawn(async move { load(i) }.in_current_frame());
            vec![loaded.await.unwrap()]
        })
        .await
}

async fn task_page(p: u32) -> Seen {
    TASK_PAGE
        .get_or_compute_async(obj(p), async move {
            let mut seen = task_part(p).await;
            tokio::task::yield_now().await;
            seen.extend(task_part(p + 1).await);
            seen
        })
        .await
}

#[test]
fn async_tasks_spawning_their_loads_never_read_older_than_a_returned_invalidation() {
    const TASK_OPS: usize = 200_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let stale = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + BOUND;
    rt.block_on(async {
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let (stale, reads) = (Arc::clone(&stale), Arc::clone(&reads));
                tokio::spawn(async move {
                    let mut rng = Rng(0xdead_beef ^ ((t + 1) * 0x9e37_79b9));
                    for n in 0..TASK_OPS / 8 {
                        if n.is_multiple_of(1024) {
                            assert!(Instant::now() < deadline, "the async oracle took too long");
                        }
                        let i = rng.next() % OBJECTS as u32;
                        let before = committed();
                        match rng.next() % 10 {
                            0..=5 => {
                                let seen = task_page(i).await;
                                reads.fetch_add(1, SeqCst);
                                check(&before, &seen, &stale);
                            }
                            // A request timeout: the page is cancelled mid-way.
                            6 => {
                                let _ = tokio::time::timeout(Duration::ZERO, task_page(i)).await;
                            }
                            _ => write(i),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let reads = reads.load(SeqCst);
    assert!(reads > TASK_OPS / 3, "only {reads} reads");
    assert_eq!(stale.load(SeqCst), 0, "stale reads among {reads}");
}
