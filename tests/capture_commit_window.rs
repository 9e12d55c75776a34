//! A SQLite commit is visible to other connections before the writer's
//! connection applies it (its WAL hook runs after, and with a shared tier
//! configured it first tells Redis, which may be slow). A reader in that
//! window must not be served a copy computed from the rows the commit
//! replaced, and a computation that read the old rows must not be stored.
//!
//! The window is held open by a paused Redis (SIGSTOP): the writer's hook
//! waits on it for the tier's timeout, while the reader sees the new row
//! through a connection of its own.

mod common;

use std::process::Child;
use std::sync::{Arc, OnceLock};

use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OwnedMutexGuard};

use common::redis_server::{free_port, signal, start_redis};
use common::sqlite::{database, set_title};
use sqlx::SqlitePool;
use ultracache::db::sqlite::{Capture, Table};
use ultracache::{track_id, Cache, Config, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "window.post")]
struct Post {
    id: i64,
}

/// How long the writer's WAL hook waits on the paused Redis.
const TIER_TIMEOUT: Duration = Duration::from_secs(4);

static PAGE: Cache<i64, String> = Cache::new("window.page");

async fn title(pool: &SqlitePool, id: i64) -> String {
    let (t,): (String,) = sqlx::query_as("SELECT title FROM posts WHERE id = ?")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    t
}

async fn page(pool: &SqlitePool, id: i64) -> String {
    PAGE.get_or_compute_async(id, async move {
        track_id::<Post>(id);
        title(pool, id).await
    })
    .await
}

/// The paused-and-resumed Redis of this binary's tests, which take it one
/// at a time; `None` (said loudly, a failure in CI) without redis-server.
async fn redis() -> Option<OwnedMutexGuard<Child>> {
    static REDIS: OnceLock<Option<Arc<Mutex<Child>>>> = OnceLock::new();
    let redis = REDIS.get_or_init(|| {
        let port = free_port();
        let child = start_redis(port)?;
        Config::new()
            .redis(format!("redis://127.0.0.1:{port}"))
            .redis_prefix("window")
            .redis_timeout(TIER_TIMEOUT)
            .install()
            .expect("configured once");
        Some(Arc::new(Mutex::new(child)))
    });
    match redis {
        Some(r) => Some(Arc::clone(r).lock_owned().await),
        None => {
            common::redis_server::skip("commit window");
            None
        }
    }
}

/// A test is done with Redis: the last one stops it.
fn done(mut redis: OwnedMutexGuard<Child>) {
    static DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    const TESTS: usize = 2;
    if DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == TESTS {
        let _ = redis.kill();
        let _ = redis.wait();
    }
}

/// Waits (bounded) until another connection reads `want` as post `id`'s
/// title: the commit is visible.
async fn visible(reader: &SqlitePool, id: i64, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while title(reader, id).await != want {
        assert!(Instant::now() < deadline, "the commit never became visible");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_between_a_commit_and_its_hook_is_never_served_the_old_rows() {
    let Some(redis) = redis().await else { return };
    let (pool, path) = database().await;
    let capture = Capture::start(&pool, vec![Table::of::<Post>("posts", "id")])
        .await
        .unwrap();
    // The reader's own connection: it sees a commit as soon as it is visible.
    let reader = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();

    sqlx::query("INSERT INTO posts (id, title) VALUES (3, 'three')")
        .execute(&pool)
        .await
        .unwrap();

    // 1. A page cached before the write; the write is visible, its hook not
    // done: the page must be the new one, and not stored yet; another
    // post's page stays.
    assert_eq!(page(&pool, 2).await, "two");
    assert_eq!(page(&pool, 1).await, "old");
    assert_eq!(PAGE.get(&1).as_deref(), Some("old"));
    signal(&redis, "-STOP");
    let writer = tokio::spawn({
        let pool = pool.clone();
        async move { set_title(&pool, 1, "new").await }
    });
    visible(&reader, 1, "new").await;
    assert_eq!(
        page(&reader, 1).await,
        "new",
        "served the page computed from the rows the visible commit replaced"
    );
    assert!(
        !writer.is_finished(),
        "the window closed before the check (the tier answered within {TIER_TIMEOUT:?}?)"
    );
    assert_eq!(
        PAGE.get(&1),
        None,
        "a page computed before the commit was applied was stored"
    );
    assert_eq!(
        PAGE.get(&2).as_deref(),
        Some("two"),
        "the commit held more than the row it changed"
    );
    signal(&redis, "-CONT");
    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the write returns once Redis answers")
        .unwrap();
    // The background reader may apply the commit again: let it finish, so
    // that its invalidation does not refuse the next computation.
    capture.sync().await.unwrap();
    assert_eq!(page(&pool, 1).await, "new");
    assert_eq!(
        PAGE.get(&1).as_deref(),
        Some("new"),
        "once applied, the page is cached again"
    );

    // 2. A computation that read the old row before the commit, finishing
    // after the commit is visible but before its hook is done: not stored.
    let (read_tx, read_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let slow = tokio::spawn({
        let reader = reader.clone();
        async move {
            PAGE.get_or_compute_async(3, async move {
                track_id::<Post>(3);
                let t = title(&reader, 3).await;
                let _ = read_tx.send(());
                let _ = go_rx.await;
                t
            })
            .await
        }
    });
    tokio::time::timeout(Duration::from_secs(20), read_rx)
        .await
        .expect("the computation reads")
        .unwrap();
    signal(&redis, "-STOP");
    let writer = tokio::spawn({
        let pool = pool.clone();
        async move { set_title(&pool, 3, "third").await }
    });
    visible(&reader, 3, "third").await;
    go_tx.send(()).unwrap();
    let computed = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the computation ends")
        .unwrap();
    assert_eq!(computed, "three", "it read the row before the commit");
    assert!(
        !writer.is_finished(),
        "the window closed before the check (the tier answered within {TIER_TIMEOUT:?}?)"
    );
    assert_eq!(
        PAGE.get(&3),
        None,
        "a page computed from the old row was stored while the commit was visible"
    );
    assert_eq!(page(&reader, 3).await, "third");
    signal(&redis, "-CONT");
    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the write returns once Redis answers")
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!(page(&pool, 3).await, "third");
    assert_eq!(PAGE.get(&3).as_deref(), Some("third"));

    // 3. A connection without the note trigger holds the whole table for
    // its commit: still never the old page (and no page of the table is
    // stored until the commit is applied).
    let mut bare = pool.acquire().await.unwrap();
    sqlx::query("DROP TRIGGER temp._ultracache_note")
        .execute(&mut *bare)
        .await
        .expect("a hooked connection has the note trigger");
    assert_eq!(page(&pool, 1).await, "new");
    signal(&redis, "-STOP");
    let writer = tokio::spawn(async move {
        set_title(&mut *bare, 1, "fourth").await;
        bare
    });
    visible(&reader, 1, "fourth").await;
    assert_eq!(page(&reader, 1).await, "fourth");
    assert!(!writer.is_finished(), "the window closed before the check");
    assert_eq!(PAGE.get(&1), None);
    assert_eq!(PAGE.get(&2), None, "the whole table is held");
    signal(&redis, "-CONT");
    let bare = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the write returns once Redis answers")
        .unwrap();
    drop(bare);
    capture.sync().await.unwrap();
    assert_eq!(page(&pool, 1).await, "fourth");
    assert_eq!(PAGE.get(&1).as_deref(), Some("fourth"));

    done(redis);
    let _ = std::fs::remove_file(path);
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "window.pg")]
struct PgPost {
    id: i64,
}

static PG_PAGE: Cache<i64, String> = Cache::new("window.pg");

async fn pg_title(pool: &sqlx::PgPool, table: &str, id: i64) -> String {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT title FROM {table} WHERE id = $1"
    )))
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn pg_page(pool: &sqlx::PgPool, table: &str, id: i64) -> String {
    PG_PAGE
        .get_or_compute_async(id, async move {
            track_id::<PgPost>(id);
            pg_title(pool, table, id).await
        })
        .await
}

/// The same on PostgreSQL, committed through `Capture::commit` and through
/// `db::Transaction::commit` with an invalidation the writer made itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_between_a_postgres_commit_and_its_invalidation_is_never_served_the_old_rows() {
    let Some(redis) = redis().await else { return };
    let url = std::env::var("ULTRACACHE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
    {
        Ok(pool) => pool,
        Err(e) => {
            let message = format!("no PostgreSQL at {url}: {e}");
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{message} (CI=true: a skipped test is a failed test)"
            );
            eprintln!("\n*** SKIPPED: {message} ***\n");
            done(redis);
            return;
        }
    };
    let table = format!("window_{}", std::process::id());
    for sql in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, title TEXT NOT NULL)"),
        format!("INSERT INTO {table} VALUES (1, 'old'), (2, 'two')"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    let capture = ultracache::db::postgres::Capture::start(
        &pool,
        vec![ultracache::db::postgres::Table::of::<PgPost>(&table, "id")],
    )
    .await
    .unwrap();
    let update = format!("UPDATE {table} SET title = $1 WHERE id = $2");

    for (id, new, through_capture) in [(1, "new", true), (2, "second", false)] {
        assert_eq!(
            pg_page(&pool, &table, id).await,
            if id == 1 { "old" } else { "two" }
        );
        signal(&redis, "-STOP");
        let writer = tokio::spawn({
            let (pool, capture, update) = (pool.clone(), capture.clone(), update.clone());
            async move {
                let mut tx = ultracache::db::begin(&pool).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(update))
                    .bind(new)
                    .bind(id)
                    .execute(&mut **tx)
                    .await
                    .unwrap();
                if through_capture {
                    capture.commit(tx).await.unwrap();
                } else {
                    tx.invalidate_id::<PgPost>(id);
                    tx.commit().await.unwrap();
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while pg_title(&pool, &table, id).await != new {
            assert!(Instant::now() < deadline, "the commit never became visible");
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pg_page(&pool, &table, id).await,
            new,
            "served the page computed from the rows the visible commit replaced \
             (through_capture: {through_capture})"
        );
        assert!(
            !writer.is_finished(),
            "the window closed before the check (the tier answered within {TIER_TIMEOUT:?}?)"
        );
        assert_eq!(
            PG_PAGE.get(&id),
            None,
            "a page computed meanwhile was stored"
        );
        signal(&redis, "-CONT");
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("the write returns once Redis answers")
            .unwrap();
        // The capture applies the commit too: let it finish first.
        capture.sync().await.unwrap();
        assert_eq!(pg_page(&pool, &table, id).await, new);
        assert_eq!(
            PG_PAGE.get(&id).as_deref(),
            Some(new),
            "cached again once applied"
        );
    }
    drop(capture);
    done(redis);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await;
}
