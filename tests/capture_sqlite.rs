//! Change capture on SQLite: committed writes nobody annotated — raw queries
//! through the pool, and another process writing the file (the `sqlite3`
//! shell) — invalidate what was computed from the rows they changed; writes
//! rolled back invalidate nothing. Against a real SQLite file.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::sqlite::{database, set_title};
use sqlx::SqlitePool;
use ultracache::db::sqlite::{Capture, Table};
use ultracache::{db, track_id, track_kind, Cache, Trackable};

/// One kind per test: tests run at once in this process, each on its own
/// file, and a write in one must not drop another's pages.
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
    RawPost = "capture.raw",
    ListedPost = "capture.listed",
    RolledBackPost = "capture.rolled_back",
    ShellPost = "capture.shell",
    MissingPost = "capture.missing",
    RacedPost = "capture.raced",
    UpgradedPost = "capture.upgraded",
    AutocommitPost = "capture.autocommit",
    WindowPost = "capture.window",
    SavepointPost = "capture.savepoint",
    BulkPost = "capture.bulk",
    UnhookedPost = "capture.unhooked",
    SwitchedPost = "capture.switched",
    ReturningPost = "capture.returning",
    ConcurrentPost = "capture.concurrent",
);

async fn title<K: Trackable<Id = i64>>(pool: &SqlitePool, id: i64) -> String {
    let (t,): (String,) = sqlx::query_as("SELECT title FROM posts WHERE id = ?")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    track_id::<K>(id);
    t
}

async fn page<K: Trackable<Id = i64>>(
    cache: &'static Cache<i64, String>,
    pool: &SqlitePool,
    id: i64,
) -> String {
    cache
        .get_or_compute_async(id, async move { title::<K>(pool, id).await })
        .await
}

async fn start<K: Trackable>(pool: &SqlitePool) -> std::sync::Arc<Capture> {
    Capture::start(pool, vec![Table::of::<K>("posts", "id")])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_write_nobody_annotated_refreshes_exactly_its_row() {
    static PAGE: Cache<i64, String> = Cache::new("capture.raw");
    let (pool, _) = database().await;
    let capture = start::<RawPost>(&pool).await;
    assert_eq!(page::<RawPost>(&PAGE, &pool, 1).await, "old");
    assert_eq!(page::<RawPost>(&PAGE, &pool, 2).await, "two");
    set_title(&pool, 1, "raw").await;
    capture.sync().await.unwrap();
    assert_eq!(PAGE.get(&1), None);
    assert_eq!(page::<RawPost>(&PAGE, &pool, 1).await, "raw");
    assert_eq!(
        PAGE.get(&2).as_deref(),
        Some("two"),
        "another row's page was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_refreshes_the_lists_of_its_kind() {
    static LIST: Cache<u8, usize> = Cache::new("capture.list");
    let (pool, _) = database().await;
    let capture = start::<ListedPost>(&pool).await;
    let count = || async {
        LIST.get_or_compute_async(0, async {
            track_kind::<ListedPost>();
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM posts")
                .fetch_one(&pool)
                .await
                .unwrap();
            n as usize
        })
        .await
    };
    assert_eq!(count().await, 2);
    sqlx::query("INSERT INTO posts (id, title) VALUES (3, 'three')")
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!(count().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_write_invalidates_nothing_and_a_committed_one_before_commit_returns() {
    static PAGE: Cache<i64, String> = Cache::new("capture.tx");
    let (pool, _) = database().await;
    let capture = start::<RolledBackPost>(&pool).await;
    page::<RolledBackPost>(&PAGE, &pool, 1).await;
    let mut tx = db::begin(&pool).await.unwrap();
    set_title(&mut **tx, 1, "never").await;
    tx.rollback().await.unwrap();
    assert_eq!(capture.sync().await.unwrap(), 0);
    assert_eq!(PAGE.get(&1).as_deref(), Some("old"));

    let mut tx = db::begin(&pool).await.unwrap();
    set_title(&mut **tx, 1, "committed").await;
    capture.commit(tx).await.unwrap();
    assert_eq!(PAGE.get(&1), None, "the writer's next read would be stale");
    assert_eq!(page::<RolledBackPost>(&PAGE, &pool, 1).await, "committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_process_is_seen_without_any_call() {
    static PAGE: Cache<i64, String> = Cache::new("capture.shell");
    if std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_err()
    {
        let message = "no `sqlite3` shell: the other-process capture test cannot run";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message} (CI=true: a skipped test is a failed test)");
        }
        eprintln!("\n*** SKIPPED: {message} ***\n");
        return;
    }
    let (pool, path) = database().await;
    let _capture = start::<ShellPost>(&pool).await;
    assert_eq!(page::<ShellPost>(&PAGE, &pool, 1).await, "old");
    let out = std::process::Command::new("sqlite3")
        .args(["-cmd", ".timeout 5000"])
        .arg(&path)
        .arg("UPDATE posts SET title = 'shell' WHERE id = 1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The background task reads the change log every 100 ms; the bound
    // only keeps a failure from hanging (the latency is a benchmark's).
    let written = Instant::now();
    while PAGE.get(&1).is_some() {
        assert!(written.elapsed() < Duration::from_secs(30), "never seen");
        tokio::task::yield_now().await;
    }
    assert_eq!(page::<ShellPost>(&PAGE, &pool, 1).await, "shell");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_or_key_column_that_does_not_exist_is_an_error_at_start() {
    let (pool, _) = database().await;
    assert!(
        Capture::start(&pool, vec![Table::of::<MissingPost>("no_such_table", "id")])
            .await
            .is_err()
    );
    assert!(Capture::start(
        &pool,
        vec![Table::of::<MissingPost>("posts", "no_such_column")]
    )
    .await
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_committed_writes_never_see_a_page_older_than_the_commit() {
    static PAGE: Cache<i64, String> = Cache::new("capture.race");
    let (pool, _) = database().await;
    // The background task applies the log too: commit must not return
    // while it is halfway through a batch.
    let capture = start::<RacedPost>(&pool).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, stop) = (pool.clone(), std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    page::<RacedPost>(&PAGE, &pool, 1).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for round in 0..40 {
        let title = format!("round {round}");
        let mut tx = db::begin(&pool).await.unwrap();
        set_title(&mut **tx, 1, &title).await;
        capture.commit(tx).await.unwrap();
        assert_eq!(
            page::<RacedPost>(&PAGE, &pool, 1).await,
            title,
            "stale after the commit returned"
        );
    }
    stop.store(true, SeqCst);
    for r in readers {
        r.await.unwrap();
    }
}

/// Rows of its own kind: the other tests' writes to posts 1 and 2 never
/// touch it.
#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "capture.commented")]
struct CommentedPost {
    id: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_refreshes_only_its_own_posts_pages_and_a_moved_one_refreshes_both() {
    static COUNT: Cache<i64, i64> = Cache::new("capture.comments");
    static LIST: Cache<u8, i64> = Cache::new("capture.comments.list");
    let (pool, _) = database().await;
    sqlx::query("CREATE TABLE comments (id INTEGER PRIMARY KEY, post_id INTEGER, body TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    let capture = Capture::start(
        &pool,
        vec![
            Table::of::<CommentedPost>("posts", "id"),
            Table::belongs_to::<CommentedPost>("comments", "post_id"),
        ],
    )
    .await
    .unwrap();
    let count = |post: i64| {
        let pool = pool.clone();
        async move {
            COUNT
                .get_or_compute_async(post, async move {
                    track_id::<CommentedPost>(post);
                    let (n,): (i64,) =
                        sqlx::query_as("SELECT COUNT(*) FROM comments WHERE post_id = ?")
                            .bind(post)
                            .fetch_one(&pool)
                            .await
                            .unwrap();
                    n
                })
                .await
        }
    };
    let posts = || async {
        LIST.get_or_compute_async(0, async {
            track_kind::<CommentedPost>();
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM posts")
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        })
        .await
    };
    assert_eq!((count(1).await, count(2).await, posts().await), (0, 0, 2));
    sqlx::query("INSERT INTO comments (id, post_id, body) VALUES (10, 1, 'hi')")
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!(COUNT.get(&1), None, "its post's count was kept");
    assert_eq!(COUNT.get(&2), Some(0), "another post's count was dropped");
    assert_eq!(
        LIST.get(&0),
        Some(2),
        "a comment dropped every list of posts"
    );
    assert_eq!(count(1).await, 1);
    // Moved from post 1 to post 2: both counts change.
    sqlx::query("UPDATE comments SET post_id = 2 WHERE id = 10")
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!((COUNT.get(&1), COUNT.get(&2)), (None, None));
    assert_eq!((count(1).await, count(2).await), (0, 1));
    // A comment of no post belongs to nothing and breaks nothing.
    sqlx::query("INSERT INTO comments (id, post_id, body) VALUES (11, NULL, 'orphan')")
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!((COUNT.get(&1), COUNT.get(&2)), (Some(0), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_the_earlier_layout_is_replaced_and_writes_keep_working() {
    static PAGE: Cache<i64, String> = Cache::new("capture.upgrade");
    let (pool, _) = database().await;
    // The layout before logs named their column, with its trigger (in
    // place of the log the hooked connections created; in one transaction,
    // so that a connection the pool opens meanwhile finds the old log).
    let mut tx = pool.begin().await.unwrap();
    for sql in [
        "DROP TABLE _ultracache_changes",
        "CREATE TABLE _ultracache_changes (\
         seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, key TEXT NOT NULL)",
        "CREATE TRIGGER _ultracache_posts_update AFTER UPDATE ON posts BEGIN \
         INSERT INTO _ultracache_changes (tbl, key) VALUES ('posts', NEW.id); END",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let capture = start::<UpgradedPost>(&pool).await;
    assert_eq!(page::<UpgradedPost>(&PAGE, &pool, 1).await, "old");
    set_title(&pool, 1, "upgraded").await;
    capture.sync().await.unwrap();
    assert_eq!(page::<UpgradedPost>(&PAGE, &pool, 1).await, "upgraded");
}

/// Models that declare their tables: a post, a tag, and the join table.
#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "capture.m.post", table = "posts")]
struct MappedPost {
    id: i64,
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "capture.m.tag", table = "tags")]
struct MappedTag {
    id: i64,
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "capture.m.post_tag", table = "post_tags")]
#[allow(dead_code)] // read by the derive (its columns), never by the test
struct PostTag {
    id: i64,
    #[trackable(belongs_to = MappedPost)]
    post_id: i64,
    #[trackable(belongs_to = MappedTag, column = "tag")]
    tag_id: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_row_declared_on_the_model_refreshes_both_sides_and_nothing_else() {
    static TAGS_OF: Cache<i64, i64> = Cache::new("capture.m.tags_of");
    static POSTS_OF: Cache<i64, i64> = Cache::new("capture.m.posts_of");
    let (pool, _) = database().await;
    sqlx::query(
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE post_tags (id INTEGER PRIMARY KEY, post_id INTEGER, tag INTEGER);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let tables = [
        Table::model::<MappedPost>(),
        Table::model::<MappedTag>(),
        Table::model::<PostTag>(),
    ]
    .concat();
    let capture = Capture::start(&pool, tables).await.unwrap();
    let tags_of = |post: i64| {
        let pool = pool.clone();
        async move {
            TAGS_OF
                .get_or_compute_async(post, async move {
                    track_id::<MappedPost>(post);
                    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM post_tags WHERE post_id = ?")
                        .bind(post)
                        .fetch_one(&pool)
                        .await
                        .unwrap()
                })
                .await
        }
    };
    let posts_of = |tag: i64| {
        let pool = pool.clone();
        async move {
            POSTS_OF
                .get_or_compute_async(tag, async move {
                    track_id::<MappedTag>(tag);
                    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM post_tags WHERE tag = ?")
                        .bind(tag)
                        .fetch_one(&pool)
                        .await
                        .unwrap()
                })
                .await
        }
    };
    assert_eq!((tags_of(1).await, tags_of(2).await), (0, 0));
    assert_eq!((posts_of(7).await, posts_of(8).await), (0, 0));
    sqlx::query("INSERT INTO post_tags (id, post_id, tag) VALUES (1, 1, 7)")
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!((TAGS_OF.get(&1), POSTS_OF.get(&7)), (None, None));
    assert_eq!((TAGS_OF.get(&2), POSTS_OF.get(&8)), (Some(0), Some(0)));
    assert_eq!((tags_of(1).await, posts_of(7).await), (1, 1));
    // Deleting the row refreshes both sides again.
    sqlx::query("DELETE FROM post_tags WHERE id = 1")
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!((tags_of(1).await, posts_of(7).await), (0, 0));
}

#[test]
fn the_mapping_declared_on_a_model_names_its_table_and_columns() {
    let tables = Table::model::<PostTag>();
    let described: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    assert_eq!(tables.len(), 3, "{described:?}");
    assert!(described[0].contains("\"post_tags\"") && described[0].contains("\"id\""));
    assert!(described[1].contains("\"post_id\""));
    assert!(described[2].contains("\"tag\""));
}

/// How long a test waits for a step that takes microseconds when it works.
const BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_autocommit_write_is_applied_before_execute_returns() {
    static PAGE: Cache<i64, String> = Cache::new("capture.hooked.raw");
    let (pool, _) = database().await;
    let _capture = start::<AutocommitPost>(&pool).await;
    // Every round: the background reader (every 100 ms) cannot be what
    // dropped the page in the microseconds between execute and the check.
    for round in 0..30 {
        assert_eq!(page::<AutocommitPost>(&PAGE, &pool, 2).await, "two");
        page::<AutocommitPost>(&PAGE, &pool, 1).await;
        let title = format!("raw {round}");
        set_title(&pool, 1, &title).await;
        assert_eq!(
            PAGE.get(&1),
            None,
            "round {round}: stale after execute returned"
        );
        assert_eq!(page::<AutocommitPost>(&PAGE, &pool, 1).await, title);
        assert_eq!(
            PAGE.get(&2).as_deref(),
            Some("two"),
            "another row's page was dropped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_between_a_write_and_its_commit_never_leaves_the_old_row_cached() {
    static PAGE: Cache<i64, String> = Cache::new("capture.hooked.window");
    let (pool, _) = database().await;
    let _capture = start::<WindowPost>(&pool).await;
    // A plain sqlx transaction, nothing of ultracache's around it.
    let mut tx = pool.begin().await.unwrap();
    set_title(&mut *tx, 1, "new").await;
    // One reader caches the committed (old) row while the write is open ...
    assert_eq!(page::<WindowPost>(&PAGE, &pool, 1).await, "old");
    // ... another reads it and is still computing when the commit lands.
    let (read, was_read) = tokio::sync::oneshot::channel();
    let (go, released) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let pool = pool.clone();
        tokio::spawn(async move {
            PAGE.invalidate(&1);
            PAGE.get_or_compute_async(1, async move {
                let t = title::<WindowPost>(&pool, 1).await;
                read.send(()).unwrap();
                released.await.unwrap();
                t
            })
            .await
        })
    };
    tokio::time::timeout(BOUND, was_read)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        PAGE.get(&1),
        None,
        "the old row stayed cached after the commit"
    );
    go.send(()).unwrap();
    assert_eq!(
        tokio::time::timeout(BOUND, reader).await.unwrap().unwrap(),
        "old"
    );
    assert_eq!(
        PAGE.get(&1),
        None,
        "a value read before the commit was stored after it"
    );
    assert_eq!(page::<WindowPost>(&PAGE, &pool, 1).await, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_rolled_back_inside_a_committed_transaction_keeps_only_what_committed() {
    static PAGE: Cache<i64, String> = Cache::new("capture.hooked.savepoint");
    let (pool, _) = database().await;
    let _capture = start::<SavepointPost>(&pool).await;
    page::<SavepointPost>(&PAGE, &pool, 1).await;
    page::<SavepointPost>(&PAGE, &pool, 2).await;
    let mut tx = pool.begin().await.unwrap();
    set_title(&mut *tx, 1, "kept").await;
    let mut inner = sqlx::Connection::begin(&mut *tx).await.unwrap();
    set_title(&mut *inner, 2, "undone").await;
    inner.rollback().await.unwrap();
    assert_eq!(
        PAGE.get(&1).as_deref(),
        Some("old"),
        "applied before the commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(PAGE.get(&1), None);
    assert_eq!(page::<SavepointPost>(&PAGE, &pool, 1).await, "kept");
    assert_eq!(page::<SavepointPost>(&PAGE, &pool, 2).await, "two");

    // A dropped transaction rolls back: nothing to apply, nothing applied.
    let mut tx = pool.begin().await.unwrap();
    set_title(&mut *tx, 1, "dropped").await;
    drop(tx);
    assert_eq!(PAGE.get(&1).as_deref(), Some("kept"));
    assert_eq!(page::<SavepointPost>(&PAGE, &pool, 1).await, "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_each_read_their_own_write_while_readers_hammer() {
    static PAGE: Cache<i64, String> = Cache::new("capture.hooked.concurrent");
    let (pool, _) = database().await;
    let _capture = start::<ConcurrentPost>(&pool).await;
    sqlx::query("INSERT INTO posts (id, title) VALUES (10, 'a'), (11, 'b'), (12, 'c')")
        .execute(&pool)
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, stop) = (pool.clone(), std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    for id in 10..13 {
                        page::<ConcurrentPost>(&PAGE, &pool, id).await;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let writers: Vec<_> = (10..13)
        .map(|id| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for round in 0..20 {
                    let title = format!("{id}/{round}");
                    if round % 2 == 0 {
                        set_title(&pool, id, &title).await;
                    } else {
                        let mut tx = pool.begin().await.unwrap();
                        set_title(&mut *tx, id, &title).await;
                        tx.commit().await.unwrap();
                    }
                    assert_eq!(
                        page::<ConcurrentPost>(&PAGE, &pool, id).await,
                        title,
                        "read-your-writes"
                    );
                }
            })
        })
        .collect();
    for w in writers {
        tokio::time::timeout(BOUND, w).await.unwrap().unwrap();
    }
    stop.store(true, SeqCst);
    for r in readers {
        tokio::time::timeout(BOUND, r).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_more_rows_than_are_applied_one_by_one_drops_the_whole_kind() {
    static PAGE: Cache<i64, String> = Cache::new("capture.hooked.bulk");
    let (pool, _) = database().await;
    let _capture = start::<BulkPost>(&pool).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM n WHERE i < 10150) \
         INSERT INTO posts (id, title) SELECT i, 'bulk' FROM n",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(page::<BulkPost>(&PAGE, &pool, 1).await, "old");
    assert_eq!(page::<BulkPost>(&PAGE, &pool, 5000).await, "bulk");
    sqlx::query("UPDATE posts SET title = title || '!'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(PAGE.get(&1), None);
    assert_eq!(PAGE.get(&5000), None);
    assert_eq!(page::<BulkPost>(&PAGE, &pool, 1).await, "old!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_in_rollback_journal_mode_is_switched_to_wal_and_hooked() {
    static PAGE: Cache<i64, String> = Cache::new("capture.switched");
    let (pool, _) = common::sqlite::database_with(ultracache::db::sqlite::pool_options()).await;
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let _capture = start::<SwitchedPost>(&pool).await;
    for round in 0..10 {
        page::<SwitchedPost>(&PAGE, &pool, 1).await;
        let title = format!("switched {round}");
        set_title(&pool, 1, &title).await;
        assert_eq!(
            PAGE.get(&1),
            None,
            "round {round}: stale after execute returned"
        );
        assert_eq!(page::<SwitchedPost>(&PAGE, &pool, 1).await, title);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_without_the_hooks_is_applied_by_the_background_reader() {
    static PAGE: Cache<i64, String> = Cache::new("capture.unhooked.delete");
    let (pool, _) = common::sqlite::database_with(sqlx::sqlite::SqlitePoolOptions::new()).await;
    let _capture = start::<UnhookedPost>(&pool).await;
    assert_eq!(page::<UnhookedPost>(&PAGE, &pool, 1).await, "old");
    set_title(&pool, 1, "later").await;
    let written = Instant::now();
    while PAGE.get(&1).is_some() {
        assert!(written.elapsed() < BOUND, "never applied");
        tokio::task::yield_now().await;
    }
    assert_eq!(page::<UnhookedPost>(&PAGE, &pool, 1).await, "later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_write_is_seen_at_once_in_a_transaction_and_within_a_poll_in_autocommit() {
    static PAGE: Cache<i64, String> = Cache::new("capture.returning");
    let (pool, _) = database().await;
    let _capture = start::<ReturningPost>(&pool).await;
    page::<ReturningPost>(&PAGE, &pool, 1).await;
    let mut tx = pool.begin().await.unwrap();
    let (id,): (i64,) =
        sqlx::query_as("UPDATE posts SET title = 'in tx' WHERE id = 1 RETURNING id")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(id, 1);
    tx.commit().await.unwrap();
    assert_eq!(PAGE.get(&1), None, "stale after commit returned");
    assert_eq!(page::<ReturningPost>(&PAGE, &pool, 1).await, "in tx");

    // In autocommit, SQLite commits as sqlx resets the statement, with no
    // hook: the background reader applies it.
    let _: (i64,) =
        sqlx::query_as("UPDATE posts SET title = 'autocommit' WHERE id = 1 RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let written = Instant::now();
    while PAGE.get(&1).is_some() {
        assert!(written.elapsed() < BOUND, "never applied");
        tokio::task::yield_now().await;
    }
    assert_eq!(page::<ReturningPost>(&PAGE, &pool, 1).await, "autocommit");
}

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "capture.code")]
struct Code {
    #[trackable(id)]
    code: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_key_made_of_digits_refreshes_its_row() {
    static NAME: Cache<String, String> = Cache::new("capture.code");
    let (pool, _) = database().await;
    sqlx::query("CREATE TABLE codes (code TEXT PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO codes (code, name) VALUES ('007', 'bond'), ('7', 'seven')")
        .execute(&pool)
        .await
        .unwrap();
    let capture = Capture::start(&pool, vec![Table::of::<Code>("codes", "code")])
        .await
        .unwrap();
    let name = |code: &'static str| {
        let pool = pool.clone();
        NAME.get_or_compute_async(code.to_owned(), async move {
            let (n,): (String,) = sqlx::query_as("SELECT name FROM codes WHERE code = ?")
                .bind(code)
                .fetch_one(&pool)
                .await
                .unwrap();
            track_id::<Code>(code.to_owned());
            n
        })
    };
    assert_eq!(name("007").await, "bond");
    assert_eq!(name("7").await, "seven");
    sqlx::query("UPDATE codes SET name = 'james' WHERE code = '007'")
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!(
        name("007").await,
        "james",
        "the row keyed '007' was written"
    );
    sqlx::query("UPDATE codes SET name = 'sept' WHERE code = '7'")
        .execute(&pool)
        .await
        .unwrap();
    capture.sync().await.unwrap();
    assert_eq!(name("7").await, "sept", "the row keyed '7' was written");
}
