//! Change capture on SQLite (feature `sqlite`): every committed change to a
//! captured table — through the app's pool, a raw query nobody annotated, or
//! another process writing the same file (the `sqlite3` shell, a cron job) —
//! becomes an invalidation of the row's object and of its kind.
//!
//! Triggers on each table append `(table, column, value)` to a change log
//! (`_ultracache_changes`) in the same transaction as the write, so a change
//! is logged if and only if it commits. Two readers apply the log:
//!
//! - **In process, before the commit returns.** A connection opened through
//!   [`pool_options`] (or given to [`hook`]) applies its own commits from
//!   SQLite's WAL hook, which runs once the commit is durable and before
//!   the statement that committed returns: a raw `sqlx::query` in
//!   autocommit or a transaction's `commit()` returns only once every node's
//!   cache (through the shared tier, when one is configured) has dropped what
//!   it changed (a single-row fetch of an `INSERT … RETURNING` in autocommit
//!   excepted: SQLite commits it without a hook, so run it in a transaction).
//!   This needs WAL mode: hooking a connection switches the
//!   database to it (it is a setting of the file, and what concurrent
//!   readers want anyway).
//! - **Everything else within milliseconds.** A connection of the
//!   capture's own asks SQLite every 5 ms whether another connection
//!   committed (`PRAGMA data_version`, which counts commits by other
//!   connections and processes) and reads the log when one did, and every
//!   [`POLL`] (100 ms) regardless: other processes' writes (the `sqlite3`
//!   shell), connections not hooked, an in-memory database. [`Capture::sync`]
//!   does it on demand and [`Capture::commit`] right after a transaction
//!   commits.
//!
//! Triggers and the log table are created when capture starts
//! (`CREATE … IF NOT EXISTS`); a table or key column that does not exist is an
//! error then, not a silent miss.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sqlx::Error> {
//! use ultracache::db::sqlite::{pool_options, Capture, Table};
//! use ultracache::Trackable;
//!
//! #[derive(Trackable)]
//! #[trackable(table = "posts")]
//! struct Post { id: i64 }
//!
//! let pool = pool_options().connect("sqlite://blog.db?mode=rwc").await?;
//! let capture = Capture::start(&pool, Table::model::<Post>()).await?;
//! // Applied before `execute` returns: the next read of post 1 recomputes.
//! sqlx::query("UPDATE posts SET title = 'New' WHERE id = 1").execute(&pool).await?;
//! # let _ = capture; Ok(()) }
//! ```

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{SqliteConnection, SqlitePool};

pub use super::Table;
use super::Transaction;
use crate::dep::{Dep, Kind};

mod hooks;

/// Pool options whose connections apply their own commits before the commit
/// returns (see the [module docs](self)). For a pool that needs its own
/// `after_connect`, call [`hook`] from it instead.
///
/// ```no_run
/// # async fn demo() -> Result<(), sqlx::Error> {
/// let pool = ultracache::db::sqlite::pool_options()
///     .max_connections(8)
///     .connect("sqlite://app.db?mode=rwc")
///     .await?;
/// # let _ = pool; Ok(()) }
/// ```
pub fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().after_connect(|conn, _| Box::pin(hook(conn)))
}

/// Hooks one connection so that its commits are applied before they return
/// (see the [module docs](self)): for a pool's own `after_connect`.
///
/// ```no_run
/// # async fn demo() -> Result<(), sqlx::Error> {
/// use sqlx::sqlite::SqlitePoolOptions;
///
/// let pool = SqlitePoolOptions::new()
///     .after_connect(|conn, _| {
///         Box::pin(async move {
///             sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
///             ultracache::db::sqlite::hook(conn).await
///         })
///     })
///     .connect("sqlite://app.db?mode=rwc")
///     .await?;
/// # let _ = pool; Ok(()) }
/// ```
pub async fn hook(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !hooks::install(conn).await? && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "ultracache: a SQLite connection that cannot be in WAL mode (in memory, or \
             the switch was refused) is not hooked: its commits are applied within \
             {POLL:?}, not before they return"
        );
    }
    Ok(())
}

/// How often the background task reads the change log whatever happened.
pub const POLL: Duration = Duration::from_millis(100);

/// How often it asks SQLite whether another connection committed (a cheap
/// `PRAGMA data_version`), reading the log when one did.
const WATCH: Duration = Duration::from_millis(5);

/// Changes read and applied at most at once.
const BATCH: i64 = 10_000;

/// Change capture on one SQLite database; stops when dropped.
#[derive(Debug)]
pub struct Capture {
    pool: SqlitePool,
    tables: Vec<Table>,
    /// The last change applied. Held while a batch is read and applied, so
    /// a caller of `sync` returns only once everything committed before the
    /// call is applied (also when the background task was applying it).
    seen: tokio::sync::Mutex<i64>,
    /// Log rows a hooked connection applied after their commit, which the
    /// background reader skips (dropping them once it has passed them).
    hooked: std::sync::Mutex<std::collections::BTreeSet<i64>>,
    /// Commits a hooked connection holds (see `hooks`), by their last log
    /// row: the background reader ends a hold once it applied that row (the
    /// WAL hook does it first, but SQLite calls none for some commits).
    holds: std::sync::Mutex<Vec<(i64, Arc<crate::invalidation::HeldCommit>)>>,
}

/// An SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal, quoted.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Capture {
    /// Installs the change log and the triggers, and starts applying changes
    /// (in the background, on the current tokio runtime: see the module
    /// docs).
    pub async fn start(pool: &SqlitePool, tables: Vec<Table>) -> Result<Arc<Capture>, sqlx::Error> {
        // A log from an earlier layout (without the column): replaced, with
        // the triggers that wrote it.
        let (old_layout,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = '_ultracache_changes' \
             AND NOT EXISTS (SELECT 1 FROM pragma_table_info('_ultracache_changes') \
             WHERE name = 'col')",
        )
        .fetch_one(pool)
        .await?;
        if old_layout > 0 {
            let triggers: Vec<(String,)> = sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' \
                 AND name LIKE '\\_ultracache\\_%' ESCAPE '\\'",
            )
            .fetch_all(pool)
            .await?;
            for (name,) in triggers {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP TRIGGER IF EXISTS {}",
                    ident(&name)
                )))
                .execute(pool)
                .await?;
            }
            sqlx::query("DROP TABLE _ultracache_changes")
                .execute(pool)
                .await?;
        }
        sqlx::query(hooks::LOG_TABLE).execute(pool).await?;
        for t in &tables {
            // The table and its key column must exist: a typo is an error
            // now, not a silent miss later.
            let (found,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?")
                    .bind(&t.name)
                    .bind(&t.key)
                    .fetch_one(pool)
                    .await?;
            if found == 0 {
                return Err(sqlx::Error::Configuration(
                    format!(
                        "ultracache: cannot capture table {:?}: it does not exist or has no column {:?}",
                        t.name, t.key
                    )
                    .into(),
                ));
            }
            let (tbl, key) = (ident(&t.name), ident(&t.key));
            let (name, col) = (literal(&t.name), literal(&t.key));
            for (event, rows) in [
                ("INSERT", vec!["NEW"]),
                ("UPDATE", vec!["OLD", "NEW"]),
                ("DELETE", vec!["OLD"]),
            ] {
                let inserts: String = rows
                    .iter()
                    .map(|r| {
                        format!(
                            "INSERT INTO _ultracache_changes (tbl, col, key) \
                             VALUES ({name}, {col}, {r}.{key});"
                        )
                    })
                    .collect();
                let trigger = ident(&format!(
                    "_ultracache_{}_{}_{}",
                    t.name,
                    t.key,
                    event.to_lowercase()
                ));
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE TRIGGER IF NOT EXISTS {trigger} AFTER {event} ON {tbl} BEGIN {inserts} END"
                )))
                .execute(pool)
                .await?;
            }
        }
        let (last,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM _ultracache_changes")
                .fetch_one(pool)
                .await?;
        let capture = Arc::new(Capture {
            pool: pool.clone(),
            tables,
            seen: tokio::sync::Mutex::new(last),
            hooked: Default::default(),
            holds: Default::default(),
        });
        {
            let mut conn = pool.acquire().await?;
            hooks::register(hooks::file(&mut conn).await?, &capture);
            if !hooks::hooked(&mut conn).await? {
                tracing::warn!(
                    "ultracache: this SQLite pool's connections are not hooked: its writes \
                     are applied within {POLL:?} of their commit, not before it returns \
                     (build the pool with ultracache::db::sqlite::pool_options)"
                );
            }
        }
        // A connection of its own watches `PRAGMA data_version`, which
        // changes when any other connection (another process's included)
        // commits: the log is read then, at most every WATCH, and every POLL
        // whatever it says (an in-memory database's other connections are
        // other databases).
        let mut watcher: Option<SqliteConnection> =
            <SqliteConnection as sqlx::Connection>::connect_with(&*pool.connect_options())
                .await
                .ok();
        let weak: Weak<Capture> = Arc::downgrade(&capture);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut version: Option<i64> = None;
            let mut last_read = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(capture) = weak.upgrade() else {
                    return;
                };
                let changed = match watcher.as_mut() {
                    Some(conn) => {
                        match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                            .fetch_one(&mut *conn)
                            .await
                        {
                            Ok(now) => version.replace(now).is_some_and(|before| before != now),
                            Err(_) => {
                                watcher = None;
                                false
                            }
                        }
                    }
                    None => false,
                };
                if !changed && last_read.elapsed() < POLL {
                    continue;
                }
                last_read = tokio::time::Instant::now();
                if let Err(e) = capture.sync().await {
                    tracing::warn!("ultracache: reading the SQLite change log failed: {e}");
                }
            }
        });
        Ok(capture)
    }

    /// Applies the changes committed since the last call; returns how many.
    pub async fn sync(&self) -> Result<usize, sqlx::Error> {
        let mut seen = self.seen.lock().await;
        let mut applied = 0;
        loop {
            let rows: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
                "SELECT seq, tbl, col, key FROM _ultracache_changes WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(*seen)
            .bind(BATCH)
            .fetch_all(&self.pool)
            .await?;
            let Some(&(last, ..)) = rows.last() else {
                return Ok(applied);
            };
            let (deps, kinds) = {
                let mut hooked = self
                    .hooked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let new = rows.iter().filter(|(seq, ..)| !hooked.contains(seq));
                let found = self.invalidations(
                    new.map(|(_, t, c, k)| (t.as_str(), c.as_str(), k.as_deref())),
                    &Default::default(),
                );
                *hooked = hooked.split_off(&(last + 1));
                found
            };
            crate::invalidation::apply_committed(&deps, &kinds).await;
            self.applied_until(last);
            applied += rows.len();
            *seen = last;
            // Keep the log short (other processes reading it have long
            // passed what is this far behind).
            sqlx::query("DELETE FROM _ultracache_changes WHERE seq <= ?")
                .bind(last - BATCH)
                .execute(&self.pool)
                .await?;
        }
    }

    /// Notes log rows a hooked connection applied.
    fn applied_by_hook(&self, seqs: impl Iterator<Item = i64>) {
        self.hooked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(seqs);
    }

    /// A hooked connection holds `held` until log row `last` is applied.
    fn holds_until(&self, last: i64, held: &Arc<crate::invalidation::HeldCommit>) {
        let mut holds = self
            .holds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        holds.retain(|(_, h)| !h.ended());
        holds.push((last, Arc::clone(held)));
    }

    /// Log rows up to `last` are applied: the holds of their commits end.
    fn applied_until(&self, last: i64) {
        let ended: Vec<_> = {
            let mut holds = self
                .holds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (ended, kept) = std::mem::take(&mut *holds)
                .into_iter()
                .partition(|(l, _)| *l <= last);
            *holds = kept;
            ended
        };
        for (_, held) in ended {
            held.end(true);
        }
    }

    /// The kind of every captured table.
    fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = self.tables.iter().map(|t| t.kind).collect();
        kinds.sort_unstable_by_key(|k| k.name());
        kinds.dedup_by_key(|k| k.name());
        kinds
    }

    /// What log rows `(table, column, value)` drop, and whole `tables`.
    fn invalidations<'r>(
        &self,
        rows: impl Iterator<Item = (&'r str, &'r str, Option<&'r str>)>,
        tables: &std::collections::BTreeSet<String>,
    ) -> (Vec<Dep>, Vec<Kind>) {
        let mut deps = Vec::new();
        for (tbl, col, key) in rows {
            // A NULL column (a comment of no post) belongs to nothing.
            let Some(key) = key else { continue };
            for t in self.tables.iter().filter(|t| t.name == tbl && t.key == col) {
                t.deps(key, &mut deps);
            }
        }
        deps.sort_unstable();
        deps.dedup();
        let mut kinds: Vec<Kind> = self
            .tables
            .iter()
            .filter(|t| tables.contains(&t.name))
            .map(|t| t.kind)
            .collect();
        kinds.sort_unstable_by_key(|k| k.name());
        kinds.dedup_by_key(|k| k.name());
        (deps, kinds)
    }

    /// Commits `tx` and applies its changes (and any other committed since)
    /// before returning.
    pub async fn commit(&self, tx: Transaction<'_, sqlx::Sqlite>) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        self.sync().await?;
        Ok(())
    }
}
