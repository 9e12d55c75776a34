//! Invalidation on commit: invalidations made inside a sqlx transaction take
//! effect when it commits, none when it rolls back, and nothing computed
//! inside it is cached. Against a real SQLite file.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use common::sqlite::{database, set_title};
use sqlx::SqlitePool;
use ultracache::{db, invalidates, track_id, Cache, Trackable};

#[derive(Clone, Debug, Trackable)]
#[trackable(kind = "tx.post")]
struct Post {
    id: i64,
}

/// Kinds of their own for the tests that check what stays cached: tests run
/// at once in this process, and another's commit must not drop their pages.
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
    RacePost = "tx.race",
    RolledBackPost = "tx.rolled_back",
    DroppedPost = "tx.dropped",
    UncommittedPost = "tx.uncommitted",
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

/// The post's page, cached (`cache` is per test: tests run in parallel).
async fn page<K: Trackable<Id = i64>>(
    cache: &'static Cache<i64, String>,
    pool: &SqlitePool,
) -> String {
    cache
        .get_or_compute_async(1, async {
            format!("<h1>{}</h1>", title::<K>(pool, 1).await)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_before_commit_cannot_leave_a_stale_entry() {
    static PAGE: Cache<i64, String> = Cache::new("tx.race");
    let (pool, _) = database().await;
    assert_eq!(page::<RacePost>(&PAGE, &pool).await, "<h1>old</h1>");
    let mut tx = db::begin(&pool).await.unwrap();
    set_title(&mut **tx, 1, "new").await;
    tx.invalidate(&RacePost { id: 1 });
    // A reader between the write and the commit: it reads the committed
    // (old) row and caches it.
    PAGE.invalidate(&1);
    assert_eq!(page::<RacePost>(&PAGE, &pool).await, "<h1>old</h1>");
    assert!(PAGE.get(&1).is_some());
    tx.commit().await.unwrap();
    // When commit returns, the writer's next read sees its write.
    assert_eq!(PAGE.get(&1), None);
    assert_eq!(page::<RacePost>(&PAGE, &pool).await, "<h1>new</h1>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_invalidates_nothing() {
    static PAGE: Cache<i64, String> = Cache::new("tx.rollback");
    let (pool, _) = database().await;
    page::<RolledBackPost>(&PAGE, &pool).await;
    let mut tx = db::begin(&pool).await.unwrap();
    set_title(&mut **tx, 1, "never").await;
    tx.invalidate(&RolledBackPost { id: 1 });
    tx.rollback().await.unwrap();
    assert_eq!(PAGE.get(&1).as_deref(), Some("<h1>old</h1>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_without_commit_invalidates_nothing() {
    static PAGE: Cache<i64, String> = Cache::new("tx.dropped");
    let (pool, _) = database().await;
    page::<DroppedPost>(&PAGE, &pool).await;
    {
        let mut tx = db::begin(&pool).await.unwrap();
        set_title(&mut **tx, 1, "never").await;
        tx.invalidate_id::<DroppedPost>(1);
        // Dropped: rolled back by sqlx, its invalidations with it.
    }
    assert_eq!(PAGE.get(&1).as_deref(), Some("<h1>old</h1>"));
    assert_eq!(page::<DroppedPost>(&PAGE, &pool).await, "<h1>old</h1>");
}

static SAVES: AtomicUsize = AtomicUsize::new(0);

#[invalidates(Post)]
fn saved(post: Post) -> Post {
    SAVES.fetch_add(1, SeqCst);
    post
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidates_functions_inside_the_scope_wait_for_the_commit() {
    static PAGE: Cache<i64, String> = Cache::new("tx.scope");
    let (pool, _) = database().await;
    page::<Post>(&PAGE, &pool).await;
    let mut tx = db::begin(&pool).await.unwrap();
    set_title(&mut **tx, 1, "scoped").await;
    tx.scope(async { saved(Post { id: 1 }) }).await;
    assert!(SAVES.load(SeqCst) >= 1);
    assert!(PAGE.get(&1).is_some(), "invalidated before the commit");
    tx.commit().await.unwrap();
    assert_eq!(PAGE.get(&1), None);
    assert_eq!(page::<Post>(&PAGE, &pool).await, "<h1>scoped</h1>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_computed_inside_a_transaction_are_not_cached() {
    static PAGE: Cache<i64, String> = Cache::new("tx.uncommitted");
    let (pool, _) = database().await;
    let mut tx = db::begin(&pool).await.unwrap();
    set_title(&mut **tx, 1, "uncommitted").await;
    // Read through the transaction's own connection: it sees its write.
    let (seen,): (String,) = sqlx::query_as("SELECT title FROM posts WHERE id = 1")
        .fetch_one(&mut **tx)
        .await
        .unwrap();
    let v = tx
        .scope(PAGE.get_or_compute_async(1, async { format!("<h1>{seen}</h1>") }))
        .await;
    assert_eq!(v, "<h1>uncommitted</h1>");
    assert_eq!(PAGE.get(&1), None, "an uncommitted value was cached");
    tx.rollback().await.unwrap();
    assert_eq!(page::<UncommittedPost>(&PAGE, &pool).await, "<h1>old</h1>");
}
