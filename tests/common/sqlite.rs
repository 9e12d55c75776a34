//! A SQLite file of posts for the database tests: `posts(id, title)` with
//! post 1 "old" and post 2 "two".

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};

/// A fresh database file of its own, and a pool on it whose connections
/// apply their commits before they return
/// (`ultracache::db::sqlite::pool_options`).
pub async fn database() -> (SqlitePool, PathBuf) {
    database_with(ultracache::db::sqlite::pool_options()).await
}

/// [`database`], with a pool built from `pool` (a new file is in SQLite's
/// default rollback-journal mode until something switches it).
pub async fn database_with(pool: SqlitePoolOptions) -> (SqlitePool, PathBuf) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "ultracache-test-{}-{}.db",
        std::process::id(),
        N.fetch_add(1, SeqCst)
    ));
    let _ = std::fs::remove_file(&path);
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = pool.max_connections(4).connect_with(options).await.unwrap();
    sqlx::query("CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO posts (id, title) VALUES (1, 'old'), (2, 'two')")
        .execute(&pool)
        .await
        .unwrap();
    (pool, path)
}

/// Sets post `id`'s title through `db` (a pool or a transaction).
pub async fn set_title<'e, E: sqlx::Executor<'e, Database = Sqlite>>(db: E, id: i64, title: &str) {
    sqlx::query("UPDATE posts SET title = ? WHERE id = ?")
        .bind(title)
        .bind(id)
        .execute(db)
        .await
        .unwrap();
}
