//! Change capture on PostgreSQL (feature `postgres`): every committed change
//! to a captured table — by this app, another node, `psql`, a migration or
//! another service — becomes an invalidation of the row's object and of its
//! kind, on every node that runs a [`Capture`] on the database.
//!
//! **How.** A trigger on each table appends `(table, key, transaction id)`
//! to a durable change log (`_ultracache_changes`) in the writing
//! transaction, so a change is logged if and only if it commits, and calls
//! `pg_notify`, which PostgreSQL delivers when (and only if) it commits.
//! Each node listens on that channel and reads the log when woken, every
//! [`POLL`] anyway, and when [`Capture::sync`] or [`Capture::commit`] asks.
//!
//! **Nothing missed.** Sequence numbers are handed out when a row is
//! written, not when its transaction commits, so reading "everything past
//! the last number seen" would skip a transaction that wrote early and
//! committed late. The reader keeps instead a *watermark*: the oldest
//! transaction still running when it last read (`pg_snapshot_xmin`). Every
//! transaction below it has ended, so each read takes all entries of
//! transactions at or above the watermark, applies those it has not applied
//! yet, and moves the watermark up. A transaction left open for an hour
//! delays nothing: entries of later transactions that committed are applied
//! at once, and its own when it commits.
//!
//! **A dropped connection loses nothing.** Notifications sent while the
//! listening connection was down are lost, but the log is not: after a
//! reconnect (logged) the next read catches up from the watermark. A node
//! prunes, every [`PRUNE_EVERY`], the entries older than [`KEEP`] whose
//! transactions had already ended at its previous prune, so every node that
//! read the log within [`OUT_OF_TOUCH`] has applied them; a node that could
//! not read it for longer cannot tell what it missed, so it drops every
//! value it cached and says so.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
//! use ultracache::db::postgres::{Capture, Table};
//! use ultracache::Trackable;
//!
//! #[derive(Trackable)]
//! struct Post { id: i64 }
//!
//! let capture = Capture::start(&pool, vec![Table::of::<Post>("posts", "id")]).await?;
//! let mut tx = ultracache::db::begin(&pool).await?;
//! sqlx::query("UPDATE posts SET title = 'New' WHERE id = 1")
//!     .execute(&mut **tx)
//!     .await?;
//! capture.commit(tx).await?; // pages that showed post 1 are gone now
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

pub use super::Table;
use super::Transaction;
use crate::dep::{Dep, Kind};

/// How often the log is read when no notification arrives.
pub const POLL: Duration = Duration::from_secs(1);

/// How long the log keeps an entry at least (history to look at; the
/// safety of pruning does not rest on it).
pub const KEEP: Duration = Duration::from_secs(3600);

/// How often a node prunes the log.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A node that could not read the log for this long drops everything it
/// cached when it can again: entries it needed may have been pruned.
pub const OUT_OF_TOUCH: Duration = Duration::from_secs(300);

/// The notification channel.
const CHANNEL: &str = "ultracache_changes";

/// Change capture on one PostgreSQL database; stops when dropped.
#[derive(Debug)]
pub struct Capture {
    pool: PgPool,
    tables: Vec<Table>,
    /// Held while a read is applied, so a caller of `sync` returns only once
    /// everything committed before the call is applied.
    state: tokio::sync::Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    /// Every transaction below this one has ended and had its entries
    /// applied.
    watermark: i64,
    /// Entries at or above the watermark already applied.
    applied: HashSet<i64>,
    /// When the log was last read.
    last: std::time::Instant,
    /// The watermark at this node's previous prune, and when that was.
    pruned: (i64, std::time::Instant),
}

/// An SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal, quoted.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The oldest transaction still running, as a number.
const XMIN: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

impl Capture {
    /// Installs the change log, the trigger function and the triggers (once
    /// per database; concurrent starts on several nodes are serialized), and
    /// starts applying changes in the background on the current tokio
    /// runtime. A table or key column that does not exist is an error.
    pub async fn start(pool: &PgPool, tables: Vec<Table>) -> Result<Arc<Capture>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        // One installer at a time: CREATE OR REPLACE of one function by two
        // sessions at once fails.
        sqlx::query("SELECT pg_advisory_xact_lock(7461822301)")
            .execute(&mut *tx)
            .await?;
        // DDL waits for every transaction that wrote to its table, and every
        // later writer waits behind it: never for long, and only when
        // something is missing (what exists is left alone).
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await?;
        let installed: bool = sqlx::query_scalar(
            "SELECT to_regclass('_ultracache_changes') IS NOT NULL \
             AND to_regclass('_ultracache_changes_tx') IS NOT NULL",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !installed {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS _ultracache_changes (\
             seq BIGSERIAL PRIMARY KEY, \
             tx BIGINT NOT NULL DEFAULT pg_current_xact_id()::text::bigint, \
             tbl TEXT NOT NULL, col TEXT NOT NULL, key TEXT, \
             at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS _ultracache_changes_tx ON _ultracache_changes (tx)",
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE OR REPLACE FUNCTION _ultracache_log() RETURNS trigger AS $$ \
             BEGIN \
               IF TG_OP <> 'INSERT' THEN \
                 INSERT INTO _ultracache_changes (tbl, col, key) \
                   VALUES (TG_TABLE_NAME, TG_ARGV[0], to_jsonb(OLD) ->> TG_ARGV[0]); \
               END IF; \
               IF TG_OP <> 'DELETE' THEN \
                 INSERT INTO _ultracache_changes (tbl, col, key) \
                   VALUES (TG_TABLE_NAME, TG_ARGV[0], to_jsonb(NEW) ->> TG_ARGV[0]); \
               END IF; \
               PERFORM pg_notify({}, ''); \
               RETURN NULL; \
             END $$ LANGUAGE plpgsql",
            literal(CHANNEL)
        )))
        .execute(&mut *tx)
        .await?;
        // `TRUNCATE` fires no row triggers: it logs the whole table (`*`).
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE OR REPLACE FUNCTION _ultracache_truncated() RETURNS trigger AS $$ \
             BEGIN \
               INSERT INTO _ultracache_changes (tbl, col, key) VALUES (TG_TABLE_NAME, '*', NULL); \
               PERFORM pg_notify({}, ''); \
               RETURN NULL; \
             END $$ LANGUAGE plpgsql",
            literal(CHANNEL)
        )))
        .execute(&mut *tx)
        .await?;
        for t in &tables {
            let (found,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
            )
            .bind(&t.name)
            .bind(&t.key)
            .fetch_one(&mut *tx)
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
            let trigger_name = format!("_ultracache_{}_{}", t.name, t.key);
            let truncate_name = format!("_ultracache_{}__truncate", t.name);
            let present: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_trigger \
                 WHERE tgrelid = to_regclass(quote_ident($1)) AND tgname IN ($2, $3)",
            )
            .bind(&t.name)
            .bind(&trigger_name)
            .bind(&truncate_name)
            .fetch_one(&mut *tx)
            .await?;
            if present == 2 {
                continue;
            }
            let trigger = ident(&trigger_name);
            let table = ident(&t.name);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE OR REPLACE TRIGGER {trigger} \
                 AFTER INSERT OR UPDATE OR DELETE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION _ultracache_log({})",
                literal(&t.key)
            )))
            .execute(&mut *tx)
            .await?;
            let truncated = ident(&truncate_name);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE OR REPLACE TRIGGER {truncated} AFTER TRUNCATE ON {table} \
                 FOR EACH STATEMENT EXECUTE FUNCTION _ultracache_truncated()"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        // Listen before taking the watermark: a change committed after it
        // is either notified or read.
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        let watermark: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {XMIN}")))
            .fetch_one(pool)
            .await?;
        let capture = Arc::new(Capture {
            pool: pool.clone(),
            tables,
            state: tokio::sync::Mutex::new(Seen {
                watermark,
                applied: HashSet::new(),
                last: std::time::Instant::now(),
                pruned: (watermark, std::time::Instant::now()),
            }),
        });
        tokio::spawn(listen(Arc::downgrade(&capture), listener));
        Ok(capture)
    }

    /// Applies the changes committed since the last read; returns how many
    /// entries it applied.
    pub async fn sync(&self) -> Result<usize, sqlx::Error> {
        let mut seen = self.state.lock().await;
        // The oldest running transaction first, then the entries: every
        // transaction below it had ended, so its entries are all visible to
        // the read that follows.
        let xmin: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {XMIN}")))
            .fetch_one(&self.pool)
            .await?;
        if seen.last.elapsed() > OUT_OF_TOUCH {
            // Entries this node never read may have been pruned: what it
            // cached may be stale in ways it cannot name.
            tracing::warn!(
                "ultracache: out of touch with the PostgreSQL change log for {:?}; \
                 dropping every cached value",
                seen.last.elapsed()
            );
            crate::invalidation::clear_local();
        }
        let rows: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT seq, tbl, col, key FROM _ultracache_changes WHERE tx >= $1 ORDER BY seq",
        )
        .bind(seen.watermark)
        .fetch_all(&self.pool)
        .await?;
        let mut applied = 0;
        let new = rows.iter().filter(|(seq, ..)| seen.applied.insert(*seq));
        let (deps, kinds) = self.invalidations(new.map(|(_, t, c, k)| {
            applied += 1;
            (t.as_str(), c.as_str(), k.as_deref())
        }));
        crate::invalidation::apply_committed(&deps, &kinds).await;
        if xmin > seen.watermark {
            // Entries below the new watermark are never read again.
            let kept: Vec<i64> = sqlx::query_scalar(
                "SELECT seq FROM _ultracache_changes WHERE tx >= $1 ORDER BY seq",
            )
            .bind(xmin)
            .fetch_all(&self.pool)
            .await?;
            let kept: HashSet<i64> = kept.into_iter().collect();
            seen.applied.retain(|s| kept.contains(s));
            seen.watermark = xmin;
        }
        seen.last = std::time::Instant::now();
        Ok(applied)
    }

    /// What log rows `(table, column, value)` drop: objects, and whole kinds
    /// for a truncated table (column `*`).
    fn invalidations<'r>(
        &self,
        rows: impl Iterator<Item = (&'r str, &'r str, Option<&'r str>)>,
    ) -> (Vec<Dep>, Vec<Kind>) {
        let mut deps = Vec::new();
        let mut kinds = Vec::new();
        for (tbl, col, key) in rows {
            if col == "*" {
                // The table was truncated: every object its rows were, or
                // belonged to, may have changed.
                for t in self.tables.iter().filter(|t| t.name == tbl) {
                    kinds.push(t.kind);
                }
                continue;
            }
            // A NULL column (a comment of no post) belongs to nothing.
            let Some(key) = key else { continue };
            for t in self.tables.iter().filter(|t| t.name == tbl && t.key == col) {
                t.deps(key, &mut deps);
            }
        }
        deps.sort_unstable();
        deps.dedup();
        kinds.sort_unstable_by_key(|k| k.name());
        kinds.dedup();
        (deps, kinds)
    }

    /// Commits `tx` and applies its changes (and any other committed since)
    /// before returning: the writer's next read sees its write, and no
    /// reader that reads the new rows is served a copy computed from the
    /// old ones (what the transaction logged is held from before the commit
    /// until it is applied: see [`db::Transaction::commit`](super::Transaction::commit)).
    pub async fn commit(&self, tx: Transaction<'_, sqlx::Postgres>) -> Result<(), sqlx::Error> {
        let mut tx = tx;
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT tbl, col, key FROM _ultracache_changes \
             WHERE tx = pg_current_xact_id_if_assigned()::text::bigint",
        )
        .fetch_all(&mut **tx)
        .await?;
        let (deps, kinds) = self.invalidations(
            rows.iter()
                .map(|(t, c, k)| (t.as_str(), c.as_str(), k.as_deref())),
        );
        tx.queue.push(&deps, &kinds);
        tx.commit().await?;
        self.sync().await?;
        Ok(())
    }

    /// Every [`PRUNE_EVERY`]: deletes the entries older than [`KEEP`] of
    /// transactions that had ended by the previous prune (at least
    /// `PRUNE_EVERY` ago, longer than [`OUT_OF_TOUCH`]: every node still in
    /// touch has applied them).
    async fn prune(&self) -> Result<(), sqlx::Error> {
        let mut seen = self.state.lock().await;
        let (before, at) = seen.pruned;
        if at.elapsed() < PRUNE_EVERY {
            return Ok(());
        }
        sqlx::query("DELETE FROM _ultracache_changes WHERE tx < $1 AND at < now() - $2::interval")
            .bind(before)
            .bind(format!("{} seconds", KEEP.as_secs()))
            .execute(&self.pool)
            .await?;
        seen.pruned = (seen.watermark, std::time::Instant::now());
        Ok(())
    }
}

/// Reads the log when notified, every [`POLL`] otherwise, and after the
/// listening connection came back.
async fn listen(capture: Weak<Capture>, mut listener: PgListener) {
    loop {
        let woke = tokio::time::timeout(POLL, listener.try_recv()).await;
        let Some(capture) = capture.upgrade() else {
            return;
        };
        match woke {
            Ok(Ok(Some(_))) | Err(_) => {}
            Ok(Ok(None)) => {
                tracing::warn!(
                    "ultracache: the PostgreSQL change listener lost its connection; \
                     catching up from the change log"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!("ultracache: the PostgreSQL change listener failed: {e}");
                // Not in a hurry while the database is away.
                tokio::time::sleep(POLL).await;
            }
        }
        if let Err(e) = capture.sync().await {
            tracing::warn!("ultracache: reading the PostgreSQL change log failed: {e}");
        }
        if let Err(e) = capture.prune().await {
            tracing::warn!("ultracache: pruning the PostgreSQL change log failed: {e}");
        }
    }
}
