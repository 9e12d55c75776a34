//! A soak of the flagship blog: readers, a writer editing titles and adding
//! comments, and the admin API polled, all at once for a while, then a flood
//! of distinct URLs. What must hold:
//! - no request fails;
//! - no page is stale: after each write returns, the pages that show what it
//!   changed show it; and a reader that reads a post's title from the
//!   database, then its page, then the title again, and finds the title
//!   unchanged, finds that title on the page;
//! - the store stays within its byte bound through the flood;
//! - in the long form, resident memory after warm-up stays within 10 %.
//!
//! Short form, in every test run: 15 s, 5,000 flood URLs. Long form, before
//! a release:
//! `SOAK_SECONDS=600 SOAK_FLOOD=1000000 cargo test --release --test soak -- --nocapture`
//!
//! It prints its figures (RELIABILITY.md holds the last long run's).

#[path = "../examples/blog/app.rs"]
mod app;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ultracache::{run_pending_tasks, stats, Config, StoreConfig};

/// The default store's byte bound (the blog's pages live there).
const BOUND: u64 = 16 << 20;
/// Posts the writer edits and the readers check against the database.
const HOT_POSTS: u64 = 20;
const TOKEN: &str = "soak-token";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts the bytes the process's Rust code holds (SQLite's own heap
/// aside): resident memory also holds what the allocator keeps after frees.
struct Live;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Live allocations by size class (16-byte steps up to 4 KiB, then powers
/// of two): where the heap grew, when it did.
static CLASSES: [std::sync::atomic::AtomicI64; CLASS_COUNT] =
    [const { std::sync::atomic::AtomicI64::new(0) }; CLASS_COUNT];
const CLASS_COUNT: usize = 257 + 64;

fn class(size: usize) -> usize {
    if size <= 4096 {
        size.div_ceil(16)
    } else {
        257 + (usize::BITS - (size - 1).leading_zeros()) as usize
    }
}

fn class_name(class: usize) -> String {
    if class <= 256 {
        format!("{}..={} B", (class * 16).saturating_sub(15), class * 16)
    } else {
        format!("..={} B", 1u64 << (class - 257))
    }
}

fn count(size: usize, by: i64) {
    CLASSES[class(size)].fetch_add(by, Relaxed);
}

/// Live allocations per size class now.
fn classes() -> Vec<i64> {
    CLASSES.iter().map(|c| c.load(Relaxed)).collect()
}

/// The size classes whose live allocations grew most between two samples.
fn grown(before: &[i64], after: &[i64]) -> String {
    let mut grown: Vec<(i64, usize, i64)> = (0..CLASS_COUNT)
        .map(|c| {
            let n = after[c] - before[c];
            let size = if c <= 256 {
                c as i64 * 16
            } else {
                1i64 << (c - 257).min(62)
            };
            (n * size, c, n)
        })
        .filter(|(bytes, ..)| *bytes > 0)
        .collect();
    grown.sort_by_key(|(bytes, ..)| std::cmp::Reverse(*bytes));
    grown
        .iter()
        .take(8)
        .map(|(bytes, c, n)| format!("{} {n:+} (~{} KiB)", class_name(*c), bytes / 1024))
        .collect::<Vec<_>>()
        .join(", ")
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter only adds and subtracts the sizes of those calls.
unsafe impl std::alloc::GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
            count(layout.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
        count(layout.size(), -1);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            LIVE.fetch_add(new, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
            count(new, 1);
            count(layout.size(), -1);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

/// The bytes Rust code holds now, in KiB.
fn live_kib() -> u64 {
    (LIVE.load(Relaxed) / 1024) as u64
}

/// Resident memory of this process, in KiB, after the allocator returned
/// what it can to the system (glibc keeps freed memory otherwise).
fn rss_kib() -> u64 {
    #[cfg(target_env = "gnu")]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim only releases free memory.
        unsafe { malloc_trim(0) };
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A small xorshift: the soak needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failed: AtomicU64,
    checks: AtomicU64,
    writes: AtomicU64,
    comments: AtomicU64,
    stale: Mutex<Vec<String>>,
}

impl Tally {
    fn stale(&self, what: String) {
        let mut stale = self.stale.lock().unwrap();
        if stale.len() < 20 {
            stale.push(what);
        }
    }
}

struct Site {
    base: String,
    client: reqwest::Client,
    db: app::Db,
    /// The writer's own hooked pool on the same file, for raw edits.
    edits: sqlx::SqlitePool,
    tally: Tally,
}

impl Site {
    /// GETs `path`: its body, or `None` (counted as failed) when the request
    /// did not succeed.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Option<String> {
        self.tally.requests.fetch_add(1, Relaxed);
        let mut request = self.client.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match request.send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            Ok(r) => {
                self.failure(format!("GET {path}: {}", r.status()));
                return None;
            }
            Err(e) => {
                self.failure(format!("GET {path}: {e:?}"));
                return None;
            }
        };
        if body.is_none() {
            self.failure(format!("GET {path}: the body did not arrive"));
        }
        body
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> bool {
        self.tally.requests.fetch_add(1, Relaxed);
        match self
            .client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 303 => true,
            Ok(r) => {
                self.failure(format!("POST {path}: {}", r.status()));
                false
            }
            Err(e) => {
                self.failure(format!("POST {path}: {e:?}"));
                false
            }
        }
    }

    /// A failed request: counted, and the first few said.
    fn failure(&self, what: String) {
        if self.tally.failed.fetch_add(1, Relaxed) < 5 {
            eprintln!("soak: failed: {what}");
        }
    }

    async fn title(&self, post: u64) -> String {
        app::post_by_slug(&self.db, &format!("post-{post}"))
            .await
            .expect("the database answers")
            .expect("the post exists")
            .title
    }
}

async fn reader(site: Arc<Site>, seed: u64, until: Instant) {
    let mut rng = Rng(seed | 1);
    while Instant::now() < until {
        match rng.below(10) {
            // A hot post, checked against the database around the read.
            0..=5 => {
                let post = rng.below(HOT_POSTS) + 1;
                let before = site.title(post).await;
                let Some(page) = site.get(&format!("/posts/post-{post}"), &[]).await else {
                    continue;
                };
                let after = site.title(post).await;
                if before == after {
                    site.tally.checks.fetch_add(1, Relaxed);
                    if !page.contains(&before) {
                        site.tally
                            .stale(format!("/posts/post-{post} without {before:?}"));
                    }
                }
            }
            6 => {
                site.get("/", &[]).await;
            }
            7 => {
                site.get(&format!("/authors/{}", rng.below(4) + 1), &[])
                    .await;
            }
            _ => {
                site.get(&format!("/posts/post-{}", rng.below(200) + 1), &[])
                    .await;
            }
        }
    }
}

/// Edits titles and adds comments; after each write returns, the pages that
/// show what it changed must show it.
async fn writer(site: Arc<Site>, until: Instant) {
    let mut rng = Rng(0x5eed);
    let mut revision = 0u64;
    while Instant::now() < until {
        revision += 1;
        let post = rng.below(HOT_POSTS) + 1;
        let path = format!("/posts/post-{post}");
        let author = format!("/authors/{}", post % 4 + 1);
        if revision.is_multiple_of(2) {
            let title = format!("Soak title {post} rev {revision}");
            if !site
                .post(&format!("{path}/edit"), &[("title", title.as_str())])
                .await
            {
                continue;
            }
            site.tally.writes.fetch_add(1, Relaxed);
            assert_eq!(site.title(post).await, title, "the edit committed");
            for page in [&path, &author] {
                if let Some(body) = site.get(page, &[]).await {
                    site.tally.checks.fetch_add(1, Relaxed);
                    if !body.contains(&title) {
                        site.tally
                            .stale(format!("{page} without {title:?} after the edit returned"));
                    }
                }
            }
        } else {
            // Comments are added until each hot post has a few, then edited
            // in place (same length) through a pool of the writer's own: the
            // data stops growing, so resident memory can level off.
            let text = format!("soak comment {revision:012}");
            let mut add = site.tally.comments.load(Relaxed) < HOT_POSTS * 5;
            if !add {
                let edited = sqlx::query(
                    "UPDATE comments SET body = ? WHERE id = (SELECT id FROM comments \
                     WHERE post_id = (SELECT id FROM posts WHERE slug = ?) AND name = 'Soak' \
                     ORDER BY random() LIMIT 1)",
                )
                .bind(&text)
                .bind(format!("post-{post}"))
                .execute(&site.edits)
                .await;
                match edited {
                    // A post with no comment of the soak's yet gets one.
                    Ok(r) => add = r.rows_affected() == 0,
                    Err(e) => {
                        site.failure(format!("an edit: {e}"));
                        continue;
                    }
                }
            }
            if add {
                if !site
                    .post(&path, &[("name", "Soak"), ("body", text.as_str())])
                    .await
                {
                    continue;
                }
                site.tally.comments.fetch_add(1, Relaxed);
            }
            site.tally.writes.fetch_add(1, Relaxed);
            if let Some(body) = site.get(&path, &[]).await {
                site.tally.checks.fetch_add(1, Relaxed);
                if !body.contains(&text) {
                    site.tally.stale(format!(
                        "{path} without {text:?} after the comment returned"
                    ));
                }
            }
        }
    }
}

async fn admin(site: Arc<Site>, until: Instant) {
    let auth = format!("Bearer {TOKEN}");
    while Instant::now() < until {
        site.get("/_cache/api/stats", &[("authorization", auth.as_str())])
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn store_bytes() -> u64 {
    run_pending_tasks();
    let s = stats();
    let store = s
        .cache("pages")
        .map(|c| c.store.clone())
        .unwrap_or_default();
    s.caches
        .iter()
        .filter(|c| c.store == store)
        .map(|c| c.bytes)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blog_under_mixed_load_fails_no_request_serves_no_stale_page_and_stays_bounded() {
    let seconds = env_u64("SOAK_SECONDS", 15);
    let flood = env_u64("SOAK_FLOOD", 5_000);
    Config::new()
        .default_store(StoreConfig::new().max_bytes(BOUND))
        .install()
        .expect("configured once");
    let db_path = std::env::temp_dir().join(format!("ultracache-soak-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db_path);
    let db = app::open(db_path.to_str().unwrap()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app::router_with_admin(db.clone(), Some(TOKEN.into()));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let site = Arc::new(Site {
        base,
        client: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        db,
        edits: ultracache::db::sqlite::pool_options()
            .max_connections(1)
            .connect(&format!("sqlite://{}", db_path.display()))
            .await
            .unwrap(),
        tally: Tally::default(),
    });

    // Mixed load, with resident memory sampled all along.
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for seed in 0..6 {
        tasks.push(tokio::spawn(reader(
            Arc::clone(&site),
            seed * 7919 + 1,
            until,
        )));
    }
    tasks.push(tokio::spawn(writer(Arc::clone(&site), until)));
    tasks.push(tokio::spawn(admin(Arc::clone(&site), until)));
    let every = Duration::from_secs((seconds / 60).clamp(1, 5));
    let mut samples = Vec::new();
    let mut live = Vec::new();
    let mut held = Vec::new();
    let warm = started + Duration::from_secs(seconds / 4);
    let mut warm_classes = None;
    while Instant::now() < until {
        tokio::time::sleep(every).await;
        samples.push(rss_kib());
        live.push(live_kib());
        if warm_classes.is_none() && Instant::now() >= warm {
            warm_classes = Some(classes());
        }
        let s = stats();
        let bytes: u64 = s.caches.iter().map(|c| c.bytes + c.kept_bytes).sum();
        held.push((s.entries, s.dependency_links, bytes / 1024));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the load ends in time")
            .expect("no load task panicked");
    }
    let mixed_requests = site.tally.requests.load(Relaxed);
    if let Some(warm) = &warm_classes {
        println!(
            "soak: live allocations grown since warm-up, by size: {}",
            grown(warm, &classes())
        );
    }
    // The mixed phase's figures now: a long flood must not hide them.
    println!(
        "soak, mixed phase: {seconds} s, {mixed_requests} requests ({} writes, {} freshness \
         checks); failed {}; stale {}; RSS samples (KiB) {samples:?}; Rust heap samples \
         (KiB) {live:?}; (entries, dependency links, cached KiB) samples {held:?}",
        site.tally.writes.load(Relaxed),
        site.tally.checks.load(Relaxed),
        site.tally.failed.load(Relaxed),
        site.tally.stale.lock().unwrap().len(),
    );

    // A flood of distinct URLs: each a page of its own.
    let before_flood = rss_kib();
    let next = Arc::new(AtomicU64::new(0));
    let mut flooders = Vec::new();
    for _ in 0..8 {
        let (site, next) = (Arc::clone(&site), Arc::clone(&next));
        flooders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= flood {
                    return;
                }
                site.get(&format!("/?flood={n}"), &[]).await;
            }
        }));
    }
    for f in flooders {
        tokio::time::timeout(Duration::from_secs(3600), f)
            .await
            .expect("the flood ends in time")
            .expect("no flood task panicked");
    }
    let bytes = store_bytes();
    let after_flood = rss_kib();

    let tally = &site.tally;
    let range = |samples: &[u64]| {
        let warm = &samples[samples.len() / 4..];
        (
            warm.iter().copied().min().unwrap_or(0),
            warm.iter().copied().max().unwrap_or(0),
        )
    };
    let (low, high) = range(&samples);
    // The heap rises and falls by the pages cached at the moment (hundreds
    // of KiB between two samples): its trend is the median of the first
    // third after warm-up against the median of the last third.
    let trend = |samples: &[u64]| {
        let warm = &samples[samples.len() / 4..];
        let third = (warm.len() / 3).max(1);
        let median = |part: &[u64]| {
            let mut part = part.to_vec();
            part.sort_unstable();
            part.get(part.len() / 2).copied().unwrap_or(0)
        };
        (
            median(&warm[..third.min(warm.len())]),
            median(&warm[warm.len().saturating_sub(third)..]),
        )
    };
    let (live_low, live_high) = trend(&live);
    println!(
        "soak: {seconds} s mixed, {mixed_requests} requests ({} writes, {} freshness checks), \
         then {flood} flood URLs; failed {}; stale {}; RSS after warm-up {low}–{high} KiB \
         ({:+.1} %), Rust heap (medians of the first and last thirds) {live_low} → \
         {live_high} KiB; {before_flood} KiB before the \
         flood, {after_flood} KiB after; store {bytes} bytes of a {BOUND}-byte bound",
        tally.writes.load(Relaxed),
        tally.checks.load(Relaxed),
        tally.failed.load(Relaxed),
        tally.stale.lock().unwrap().len(),
        if low == 0 {
            0.0
        } else {
            (high as f64 / low as f64 - 1.0) * 100.0
        },
    );
    assert_eq!(tally.failed.load(Relaxed), 0, "requests failed");
    let stale = tally.stale.lock().unwrap();
    assert!(stale.is_empty(), "stale pages: {stale:#?}");
    assert!(tally.writes.load(Relaxed) > 0 && tally.checks.load(Relaxed) > 0);
    assert!(
        bytes <= BOUND + BOUND / 10,
        "the store holds {bytes} bytes, past its {BOUND}-byte bound"
    );
    if seconds >= 300 {
        assert!(
            high * 10 <= low * 11,
            "resident memory grew after warm-up: {low} → {high} KiB ({samples:?})"
        );
        assert!(
            live_high * 10 <= live_low * 11,
            "the Rust heap grew after warm-up: {live_low} → {live_high} KiB (medians of the \
             first and last thirds; {live:?})"
        );
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
}
