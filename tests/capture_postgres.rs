//! Change capture on PostgreSQL, against the real server (127.0.0.1:5432,
//! database `test`, or `ULTRACACHE_PG_URL`): writes by any client reach the
//! cache after they commit, rollbacks reach nothing, a transaction that wrote
//! early and committed late is not missed, killing the capture's connections
//! loses nothing, and a second process sees the same write.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use ultracache::db::postgres::{Capture, Table};
use ultracache::{db, track_id, Cache, Trackable};

/// Set in this test binary re-run as a second app process.
const CHILD: &str = "ULTRACACHE_TEST_PG_CHILD";

/// Each test's rows are a kind of their own: tests running at once never
/// drop each other's values.
macro_rules! kinds {
    ($($name:ident = $kind:literal),* $(,)?) => {$(
        #[derive(Clone, Debug, Trackable)]
        #[trackable(kind = $kind)]
        struct $name {
            id: i64,
        }
    )*};
}

kinds!(
    PsqlPost = "pgcapture.psql",
    RywPost = "pgcapture.ryw",
    RollbackPost = "pgcapture.rollback",
    LatePost = "pgcapture.late",
    KillPost = "pgcapture.kill",
    MissingPost = "pgcapture.missing",
    TwoPost = "pgcapture.two",
    CommentedPost = "pgcapture.comments",
    TruncatedPost = "pgcapture.truncate",
);

/// The kind of rows a test reads.
trait Row: Trackable<Id = i64> + 'static {}
impl<T: Trackable<Id = i64> + 'static> Row for T {}

fn url() -> String {
    std::env::var("ULTRACACHE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A pool on the test database named `app` (its `application_name`);
/// `None` (said loudly) without a server, a failure in CI.
async fn pool(app: &str) -> Option<PgPool> {
    let options: PgConnectOptions = url().parse().expect("a PostgreSQL URL");
    let connected = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name(app))
        .await;
    match connected {
        Ok(pool) => Some(pool),
        Err(e) => {
            let message = format!("no PostgreSQL at {}: {e}", url());
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message} (CI=true: a skipped test is a failed test)");
            }
            eprintln!("\n*** SKIPPED: {message} ***\n");
            None
        }
    }
}

/// A fresh table of this test's own, rows 1..=n titled "old".
async fn table(pool: &PgPool, name: &str, n: i64) -> String {
    let table = format!("pgc_{name}_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, title TEXT NOT NULL)"
    )))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} SELECT g, 'old' FROM generate_series(1, {n}) g"
    )))
    .execute(pool)
    .await
    .unwrap();
    table
}

async fn title<T: Row>(pool: &PgPool, table: &str, id: i64) -> String {
    let t: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT title FROM {table} WHERE id = $1"
    )))
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    track_id::<T>(id);
    t
}

async fn page<T: Row>(
    cache: &'static Cache<i64, String>,
    pool: &PgPool,
    table: &str,
    id: i64,
) -> String {
    cache
        .get_or_compute_async(id, async move { title::<T>(pool, table, id).await })
        .await
}

async fn set(pool: &PgPool, table: &str, id: i64, title: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET title = $1 WHERE id = $2"
    )))
    .bind(title)
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

async fn start<T: Row>(pool: &PgPool, table: &str) -> Arc<Capture> {
    Capture::start(pool, vec![Table::of::<T>(table, "id")])
        .await
        .unwrap()
}

/// Waits, at most `limit`, for `done`.
async fn within(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psql_write_from_another_process_reaches_the_cache_within_a_second() {
    static PAGE: Cache<i64, String> = Cache::new("pgcapture.psql");
    let Some(pool) = pool("pgc-psql").await else {
        return;
    };
    let table = table(&pool, "psql", 2).await;
    let _capture = start::<PsqlPost>(&pool, &table).await;
    assert_eq!(page::<PsqlPost>(&PAGE, &pool, &table, 1).await, "old");
    assert_eq!(page::<PsqlPost>(&PAGE, &pool, &table, 2).await, "old");
    let status = Command::new("psql")
        .args([
            &url(),
            "-q",
            "-c",
            &format!("UPDATE {table} SET title = 'psql' WHERE id = 1"),
        ])
        .status()
        .expect("psql runs");
    assert!(status.success());
    within(Duration::from_secs(1), "the psql write", || {
        PAGE.get(&1).is_none()
    })
    .await;
    assert_eq!(page::<PsqlPost>(&PAGE, &pool, &table, 1).await, "psql");
    assert_eq!(
        PAGE.get(&2).as_deref(),
        Some("old"),
        "another row's value was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_through_the_capture_is_seen_by_the_writers_next_read() {
    static PAGE: Cache<i64, String> = Cache::new("pgcapture.ryw");
    let Some(pool) = pool("pgc-ryw").await else {
        return;
    };
    let table = table(&pool, "ryw", 1).await;
    let capture = start::<RywPost>(&pool, &table).await;
    assert_eq!(page::<RywPost>(&PAGE, &pool, &table, 1).await, "old");
    let mut tx = db::begin(&pool).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET title = 'mine' WHERE id = 1"
    )))
    .execute(&mut **tx)
    .await
    .unwrap();
    capture.commit(tx).await.unwrap();
    assert_eq!(page::<RywPost>(&PAGE, &pool, &table, 1).await, "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_write_invalidates_nothing() {
    static PAGE: Cache<i64, String> = Cache::new("pgcapture.rollback");
    let Some(pool) = pool("pgc-rollback").await else {
        return;
    };
    let table = table(&pool, "rollback", 2).await;
    let capture = start::<RollbackPost>(&pool, &table).await;
    assert_eq!(page::<RollbackPost>(&PAGE, &pool, &table, 1).await, "old");
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET title = 'never' WHERE id = 1"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    set(&pool, &table, 2, "marker").await;
    capture.sync().await.unwrap();
    assert_eq!(PAGE.get(&1).as_deref(), Some("old"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_wrote_early_and_committed_late_is_not_missed() {
    static PAGE: Cache<i64, String> = Cache::new("pgcapture.late");
    let Some(pool) = pool("pgc-late").await else {
        return;
    };
    let table = table(&pool, "late", 2).await;
    let capture = start::<LatePost>(&pool, &table).await;
    assert_eq!(page::<LatePost>(&PAGE, &pool, &table, 1).await, "old");
    assert_eq!(page::<LatePost>(&PAGE, &pool, &table, 2).await, "old");
    // The early writer takes its log entry (and sequence number) first...
    let mut early = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET title = 'early' WHERE id = 1"
    )))
    .execute(&mut *early)
    .await
    .unwrap();
    // ...a later writer commits and is applied while the early one is open:
    // an open transaction delays nobody else.
    set(&pool, &table, 2, "later").await;
    capture.sync().await.unwrap();
    assert_eq!(PAGE.get(&2), None);
    assert_eq!(page::<LatePost>(&PAGE, &pool, &table, 2).await, "later");
    // The early writer's row was read again meanwhile (its write is not
    // committed: the old title is right).
    assert_eq!(PAGE.get(&1).as_deref(), Some("old"));
    early.commit().await.unwrap();
    capture.sync().await.unwrap();
    assert_eq!(PAGE.get(&1), None, "the late commit was missed");
    assert_eq!(page::<LatePost>(&PAGE, &pool, &table, 1).await, "early");
    assert_eq!(PAGE.get(&2).as_deref(), Some("later"), "applied twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_captures_connections_while_writes_continue_loses_nothing() {
    static PAGE: Cache<i64, String> = Cache::new("pgcapture.kill");
    const ROWS: i64 = 20;
    let app = format!("pgc-kill-{}", std::process::id());
    let (Some(pool), Some(writer)) = (pool(&app).await, pool("pgc-kill-writer").await) else {
        return;
    };
    let table = table(&pool, "kill", ROWS).await;
    let _capture = start::<KillPost>(&pool, &table).await;
    for id in 1..=ROWS {
        assert_eq!(page::<KillPost>(&PAGE, &pool, &table, id).await, "old");
    }
    for id in 1..=ROWS {
        set(&writer, &table, id, &format!("new {id}")).await;
        if id % 5 == 0 {
            // Every connection of the capture (the listener's too) is cut.
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&app)
            .execute(&writer)
            .await
            .unwrap();
        }
    }
    within(
        Duration::from_secs(10),
        "every write after the kills",
        || (1..=ROWS).all(|id| PAGE.get(&id).is_none()),
    )
    .await;
    for id in 1..=ROWS {
        assert_eq!(
            page::<KillPost>(&PAGE, &writer, &table, id).await,
            format!("new {id}")
        );
    }
}

#[tokio::test]
async fn a_missing_table_or_column_is_an_error_at_start() {
    let Some(pool) = pool("pgc-missing").await else {
        return;
    };
    let table = table(&pool, "missing", 1).await;
    let err = Capture::start(&pool, vec![Table::of::<MissingPost>("no_such_table", "id")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
    let err = Capture::start(
        &pool,
        vec![Table::of::<MissingPost>(&table, "no_such_column")],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no_such_column"), "{err}");
}

static TWO: Cache<i64, String> = Cache::new("pgcapture.two");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_processes_both_see_a_psql_write() {
    let Some(pool) = pool("pgc-two").await else {
        return;
    };
    let table = table(&pool, "two", 1).await;
    let _capture = start::<TwoPost>(&pool, &table).await;
    assert_eq!(page::<TwoPost>(&TWO, &pool, &table, 1).await, "old");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "second_app_process", "--ignored", "--nocapture"])
        .env(CHILD, &table)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the second process runs");
    // It says `ready` once it cached the old title.
    // Its output is read to the end (a closed pipe would fail its harness).
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim() == "ready" {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("the second process got ready in time")
        .expect("the second process said ready");
    let status = Command::new("psql")
        .args([
            &url(),
            "-q",
            "-c",
            &format!("UPDATE {table} SET title = 'both' WHERE id = 1"),
        ])
        .status()
        .expect("psql runs");
    assert!(status.success());
    within(
        Duration::from_secs(2),
        "this process sees the write",
        || TWO.get(&1).is_none(),
    )
    .await;
    child.stdin.take().unwrap().write_all(b"done\n").ok();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the second process did not see the write");
}

/// The second process of the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the two-process test as its second process"]
async fn second_app_process() {
    let Ok(table) = std::env::var(CHILD) else {
        return;
    };
    let pool = pool("pgc-two-child").await.expect("PostgreSQL");
    let _capture = start::<TwoPost>(&pool, &table).await;
    assert_eq!(page::<TwoPost>(&TWO, &pool, &table, 1).await, "old");
    println!("ready");
    within(
        Duration::from_secs(5),
        "the second process sees the write",
        || TWO.get(&1).is_none(),
    )
    .await;
    assert_eq!(page::<TwoPost>(&TWO, &pool, &table, 1).await, "both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_refreshes_only_its_own_post_and_a_moved_one_refreshes_both() {
    static COUNT: Cache<i64, i64> = Cache::new("pgcapture.comments");
    let Some(pool) = pool("pgc-comments").await else {
        return;
    };
    let posts = table(&pool, "cposts", 2).await;
    let comments = format!("pgc_comments_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {comments}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {comments} (id BIGINT PRIMARY KEY, post_id BIGINT, body TEXT)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let capture = Capture::start(
        &pool,
        vec![
            Table::of::<CommentedPost>(&posts, "id"),
            Table::belongs_to::<CommentedPost>(&comments, "post_id"),
        ],
    )
    .await
    .unwrap();
    let count = |post: i64| {
        let (pool, comments) = (pool.clone(), comments.clone());
        async move {
            COUNT
                .get_or_compute_async(post, async move {
                    track_id::<CommentedPost>(post);
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM {comments} WHERE post_id = $1"
                    )))
                    .bind(post)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                })
                .await
        }
    };
    assert_eq!((count(1).await, count(2).await), (0, 0));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {comments} VALUES (10, 1, 'hi')"
    )))
    .execute(&pool)
    .await
    .unwrap();
    capture.sync().await.unwrap();
    assert_eq!((COUNT.get(&1), COUNT.get(&2)), (None, Some(0)));
    assert_eq!(count(1).await, 1);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {comments} SET post_id = 2 WHERE id = 10"
    )))
    .execute(&pool)
    .await
    .unwrap();
    capture.sync().await.unwrap();
    assert_eq!((COUNT.get(&1), COUNT.get(&2)), (None, None));
    assert_eq!((count(1).await, count(2).await), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_table_drops_every_value_read_from_it() {
    static PAGE: Cache<i64, String> = Cache::new("pgcapture.truncate");
    let Some(pool) = pool("pgc-truncate").await else {
        return;
    };
    let table = table(&pool, "truncate", 2).await;
    let capture = start::<TruncatedPost>(&pool, &table).await;
    assert_eq!(page::<TruncatedPost>(&PAGE, &pool, &table, 1).await, "old");
    assert_eq!(page::<TruncatedPost>(&PAGE, &pool, &table, 2).await, "old");
    sqlx::query(sqlx::AssertSqlSafe(format!("TRUNCATE {table}")))
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!((PAGE.get(&1), PAGE.get(&2)), (None, None));
}
