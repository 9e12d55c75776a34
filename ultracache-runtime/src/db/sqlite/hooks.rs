//! A commit's changes applied before the commit returns to the writer.
//!
//! Each hooked connection ([`hook`](super::hook), or a pool built with
//! [`pool_options`](super::pool_options)) notes the sequence numbers of the
//! rows the capture triggers append to the change log in the writing
//! transaction (SQLite's update hook), forgets them when the transaction
//! rolls back, and reads and applies them from SQLite's WAL hook: SQLite
//! calls it once the commit is durable and the write lock released, still
//! inside the statement that committed. A computation that began before that
//! point is refused by the freshness protocol (its basis predates the
//! invalidation); one that begins after reads the committed rows. So the
//! writer's next read — on any connection, in any task — sees its write,
//! whether it was a raw `sqlx::query` in autocommit or a transaction.
//!
//! The WAL hook runs once the commit is visible to other connections, so a
//! reader could read the new rows and still be served a copy computed from
//! the old ones in the microseconds before the hook drops it. So each
//! commit is also seen *before* it becomes visible, from SQLite's commit
//! hook, which may not run SQL: a temporary trigger on the change log (one
//! per connection, `_ultracache_note`) hands each log row to the connection
//! as it is written, through a function only that connection has (other
//! processes writing the file never call it). The commit hook holds what
//! those rows change and drops this process's copies
//! ([`HeldCommit`](crate::invalidation::HeldCommit)); until the WAL hook
//! has applied the commit, a computation that read them is served to its
//! caller but not stored. A connection without the trigger (the log table
//! was replaced after it was hooked) holds every captured table whole for
//! the commit instead.
//!
//! SQLite calls the WAL hook when the statement that commits runs to its end,
//! which is how sqlx runs `execute`, `fetch_all` and every transaction's
//! `commit`. A single-row fetch (`fetch_one`, `fetch_optional`) of a write
//! that returns rows (`INSERT … RETURNING`) in autocommit stops early, and
//! SQLite then commits while sqlx resets the statement, where it calls no
//! hook: such a commit is applied by the background reader. Run that write
//! in a transaction, or call [`Capture::sync`](super::Capture::sync) after it,
//! for the writer's next read to see it.
//!
//! Outside WAL mode SQLite has no hook after a commit, so hooking a
//! connection switches its database to WAL mode (a setting of the file, kept
//! from then on); where that cannot be done (an in-memory database), the
//! connection is left unhooked and its commits are applied by the background
//! reader (within milliseconds: see the module above).
//!
//! The WAL hook takes the place of SQLite's automatic checkpoint, so it
//! checkpoints itself at SQLite's default threshold (1,000 frames). Setting
//! `PRAGMA wal_autocheckpoint` on a hooked connection removes the hook (the
//! background reader still applies every change).

use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use libsqlite3_sys as ffi;
use sqlx::sqlite::{SqliteOperation, UpdateHookResult};
use sqlx::SqliteConnection;

use super::Capture;
use crate::invalidation::HeldCommit;

/// Log rows of one commit applied one by one; past it, their tables are
/// dropped whole.
const LIMIT: usize = 10_000;

/// WAL frames after which a commit checkpoints (SQLite's default).
const CHECKPOINT_FRAMES: c_int = 1000;

/// The name under which a connection keeps its hook state.
const CLIENT_DATA: &CStr = c"ultracache_capture";

/// The captures running, by database file.
static CAPTURES: Mutex<Vec<(String, Weak<Capture>)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hooked connections to `file` apply their commits to `capture`.
pub(super) fn register(file: String, capture: &Arc<Capture>) {
    let mut captures = lock(&CAPTURES);
    captures.retain(|(_, c)| c.strong_count() > 0);
    captures.push((file, Arc::downgrade(capture)));
}

fn captures(file: &str) -> Vec<Arc<Capture>> {
    lock(&CAPTURES)
        .iter()
        .filter(|(f, _)| f == file)
        .filter_map(|(_, c)| c.upgrade())
        .collect()
}

/// The database file a connection has open (empty for an in-memory one).
pub(super) async fn file(conn: &mut SqliteConnection) -> Result<String, sqlx::Error> {
    let (file,): (String,) =
        sqlx::query_as("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(conn)
            .await?;
    Ok(file)
}

/// The log rows of one commit, `(seq, table, column, value)`, or only the
/// tables when there were more than [`LIMIT`].
#[derive(Debug, Default)]
pub(super) struct Changes {
    pub(super) rows: Vec<(i64, String, String, Option<String>)>,
    pub(super) tables: BTreeSet<String>,
}

/// One hooked connection.
#[derive(Debug)]
struct Hooked {
    file: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The first and last log row the open transaction appended.
    logged: Option<(i64, i64)>,
    /// How many log rows it appended (SQLite's update hook)…
    logged_rows: usize,
    /// …and those of them the note trigger handed over (all of them, on a
    /// connection that has the trigger).
    noted: Changes,
    noted_rows: usize,
    /// Those of a transaction whose commit began, for the WAL hook.
    committing: Option<(i64, i64)>,
    /// What that commit holds until the WAL hook applied it.
    held: Option<Arc<HeldCommit>>,
}

impl Hooked {
    fn updated(&self, row: &UpdateHookResult<'_>) {
        if row.operation != SqliteOperation::Insert
            || row.table != "_ultracache_changes"
            || row.database != "main"
        {
            return;
        }
        let seq = row.rowid;
        let mut state = lock(&self.state);
        // A commit the WAL hook never saw (see the module docs) is the
        // background reader's; it is visible by now, so its hold can end.
        if let Some(held) = state.held.take() {
            held.end(false);
        }
        if state.committing.take().is_some() {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "ultracache: a SQLite commit was applied by the background reader, not \
                     before it returned: a single-row fetch (fetch_one, fetch_optional) of \
                     a write with RETURNING in autocommit? Run it in a transaction \
                     (said once)"
                );
            }
        }
        state.logged = Some(match state.logged {
            Some((first, last)) => (first.min(seq), last.max(seq)),
            None => (seq, seq),
        });
        state.logged_rows += 1;
    }

    /// The note trigger hands over a log row as it is written.
    fn noted(&self, seq: i64, table: String, column: String, key: Option<String>) {
        let mut state = lock(&self.state);
        state.noted_rows += 1;
        if state.noted.rows.len() < LIMIT {
            state.noted.rows.push((seq, table, column, key));
        } else {
            state.noted.tables.insert(table);
        }
    }

    /// The open transaction is about to commit, not yet visible to other
    /// connections: what it changed is held (see the module docs).
    fn commit_begins(&self) {
        let mut state = lock(&self.state);
        if let Some(held) = state.held.take() {
            // An earlier commit the WAL hook never saw: visible by now.
            held.end(false);
        }
        state.committing = state.logged.take();
        let noted = std::mem::take(&mut state.noted);
        let complete = state.noted_rows == state.logged_rows;
        (state.logged_rows, state.noted_rows) = (0, 0);
        let Some((_, last)) = state.committing else {
            return;
        };
        drop(state);
        let captures = captures(&self.file);
        let (mut deps, mut kinds) = (Vec::new(), Vec::new());
        for capture in &captures {
            let (d, k) = if complete {
                capture.invalidations(
                    noted
                        .rows
                        .iter()
                        .map(|(_, t, c, k)| (t.as_str(), c.as_str(), k.as_deref())),
                    &noted.tables,
                )
            } else {
                (Vec::new(), capture.kinds())
            };
            deps.extend(d);
            kinds.extend(k);
        }
        if deps.is_empty() && kinds.is_empty() {
            return;
        }
        let held = HeldCommit::begin(deps, kinds);
        for capture in &captures {
            capture.holds_until(last, &held);
        }
        lock(&self.state).held = Some(held);
    }

    fn rolled_back(&self) {
        let held = std::mem::take(&mut *lock(&self.state)).held;
        if let Some(held) = held {
            // Nothing changed.
            held.end(true);
        }
    }

    /// The open transaction committed: its log rows (one writer at a time,
    /// so every row between its first and last) are applied.
    ///
    /// # Safety
    /// `db` is this connection, inside its WAL hook.
    unsafe fn committed(&self, db: *mut ffi::sqlite3) {
        let (committing, held) = {
            let mut state = lock(&self.state);
            (state.committing.take(), state.held.take())
        };
        let Some((first, last)) = committing else {
            return;
        };
        // SAFETY: as this function's.
        let changes = match unsafe { read(db, first, last) } {
            Ok(changes) => changes,
            Err(code) => {
                tracing::warn!(
                    "ultracache: reading this commit's changes failed (SQLite code {code}); \
                     the background reader applies them"
                );
                if let Some(held) = held {
                    held.end(false);
                }
                return;
            }
        };
        for capture in captures(&self.file) {
            let (deps, kinds) = capture.invalidations(
                changes
                    .rows
                    .iter()
                    .map(|(_, t, c, k)| (t.as_str(), c.as_str(), k.as_deref())),
                &changes.tables,
            );
            crate::invalidation::apply_committed_blocking(&deps, &kinds);
            // Rows read here were committed when read, and are applied
            // now: the background reader need not apply them again.
            capture.applied_by_hook(changes.rows.iter().map(|(seq, ..)| *seq));
        }
        if let Some(held) = held {
            held.end(true);
        }
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        // A connection closed between a commit and its WAL hook.
        let held = lock(&self.state).held.take();
        if let Some(held) = held {
            held.end(false);
        }
    }
}

/// Reads log rows `first..=last` on `db`.
///
/// # Safety
/// `db` is an open connection that no other thread uses meanwhile.
unsafe fn read(db: *mut ffi::sqlite3, first: i64, last: i64) -> Result<Changes, c_int> {
    let whole = last - first >= LIMIT as i64;
    let sql: &CStr = if whole {
        c"SELECT DISTINCT tbl FROM _ultracache_changes WHERE seq BETWEEN ?1 AND ?2"
    } else {
        c"SELECT tbl, col, key, seq FROM _ultracache_changes WHERE seq BETWEEN ?1 AND ?2"
    };
    let mut stmt = std::ptr::null_mut();
    // SAFETY: `db` is open (this function's contract); `sql` is
    // NUL-terminated; the statement is finalized on every path below.
    unsafe {
        let rc = ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut());
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
        ffi::sqlite3_bind_int64(stmt, 1, first);
        ffi::sqlite3_bind_int64(stmt, 2, last);
        let mut changes = Changes::default();
        let rc = loop {
            match ffi::sqlite3_step(stmt) {
                ffi::SQLITE_ROW => {
                    let Some(tbl) = column(stmt, 0) else { continue };
                    if whole {
                        changes.tables.insert(tbl);
                    } else if let Some(col) = column(stmt, 1) {
                        let seq = ffi::sqlite3_column_int64(stmt, 3);
                        changes.rows.push((seq, tbl, col, column(stmt, 2)));
                    }
                }
                ffi::SQLITE_DONE => break ffi::SQLITE_OK,
                rc => break rc,
            }
        };
        ffi::sqlite3_finalize(stmt);
        if rc == ffi::SQLITE_OK {
            Ok(changes)
        } else {
            Err(rc)
        }
    }
}

/// Column `i` of the current row as text, `None` for NULL.
///
/// # Safety
/// `stmt` is a statement positioned on a row.
unsafe fn column(stmt: *mut ffi::sqlite3_stmt, i: c_int) -> Option<String> {
    // SAFETY: the contract; the text pointer is valid until the next step,
    // and copied before.
    unsafe {
        let text = ffi::sqlite3_column_text(stmt, i);
        if text.is_null() {
            return None;
        }
        let len = usize::try_from(ffi::sqlite3_column_bytes(stmt, i)).unwrap_or(0);
        let bytes = std::slice::from_raw_parts(text, len);
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Installs the hooks on `conn`, switching its database to WAL mode first
/// (it stays so: the mode is the file's); returns whether it could (not for
/// an in-memory database, which has no WAL, nor when another connection
/// keeps the switch from happening).
pub(super) async fn install(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let file = file(conn).await?;
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?;
    if !mode.eq_ignore_ascii_case("wal") {
        let switched: Result<(String,), _> = sqlx::query_as("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await;
        match switched {
            Ok((mode,)) if mode.eq_ignore_ascii_case("wal") => {}
            _ => return Ok(false),
        }
    }
    // The change log, for the note trigger (the capture creates it too, in
    // the same layout; a database that refuses writes now is only hooked).
    // A log of an earlier layout (until the capture replaces it) gets no
    // trigger: one naming a column the log lacks would fail every write.
    let _ = sqlx::query(LOG_TABLE).execute(&mut *conn).await;
    let logged = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM pragma_table_info('_ultracache_changes') \
         WHERE name IN ('seq', 'tbl', 'col', 'key')",
    )
    .fetch_one(&mut *conn)
    .await
    .is_ok_and(|n| n == 4);
    let hooked = Arc::new(Hooked {
        file,
        state: Mutex::new(State::default()),
    });
    let mut handle = conn.lock_handle().await?;
    // The hooks sqlx keeps hold weak references: the connection's client
    // data owns the state, and frees it when the connection closes.
    let weak = Arc::downgrade(&hooked);
    handle.set_update_hook(move |row| {
        if let Some(h) = weak.upgrade() {
            h.updated(&row);
        }
    });
    let weak = Arc::downgrade(&hooked);
    handle.set_commit_hook(move || {
        if let Some(h) = weak.upgrade() {
            h.commit_begins();
        }
        true
    });
    let weak = Arc::downgrade(&hooked);
    handle.set_rollback_hook(move || {
        if let Some(h) = weak.upgrade() {
            h.rolled_back();
        }
    });
    // The note function holds a reference of its own, which SQLite releases
    // with the function (or at once, when registering it fails).
    let note_data = Arc::into_raw(Arc::clone(&hooked))
        .cast_mut()
        .cast::<c_void>();
    let data = Arc::into_raw(hooked).cast_mut().cast::<c_void>();
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is open and no other thread uses it while `handle` is
    // held. The client data owns the reference `data` carries and releases
    // it through `release` when the connection closes or is hooked again
    // (SQLite also releases it when storing it fails). The WAL hook is set
    // only once the client data holds `data`, and SQLite calls it only on
    // this connection while it is open, so `data` outlives every call.
    unsafe {
        if ffi::sqlite3_set_clientdata(db, CLIENT_DATA.as_ptr(), data, Some(release))
            != ffi::SQLITE_OK
        {
            return Err(sqlx::Error::Protocol(
                "ultracache: could not hook the SQLite connection (out of memory)".into(),
            ));
        }
        ffi::sqlite3_wal_hook(db, Some(wal_hook), data);
    }
    // SAFETY: as above; `note` reads `note_data` only while the function is
    // registered, and `release` frees it once.
    let noting = unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            NOTE.as_ptr(),
            4,
            ffi::SQLITE_UTF8,
            note_data,
            Some(note),
            None,
            None,
            Some(release),
        ) == ffi::SQLITE_OK
    };
    drop(handle);
    if logged && noting {
        // Without it each commit holds every captured table whole (see the
        // module docs): slower, not wrong.
        let _ = sqlx::query(
            "CREATE TEMP TRIGGER IF NOT EXISTS _ultracache_note AFTER INSERT ON \
             main._ultracache_changes BEGIN \
             SELECT _ultracache_note(NEW.seq, NEW.tbl, NEW.col, NEW.key); END",
        )
        .execute(&mut *conn)
        .await;
    }
    Ok(true)
}

/// The function the note trigger calls.
const NOTE: &CStr = c"_ultracache_note";

/// The change log's layout.
pub(super) const LOG_TABLE: &str = "CREATE TABLE IF NOT EXISTS _ultracache_changes (\
     seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, col TEXT NOT NULL, key TEXT)";

/// `_ultracache_note(seq, table, column, key)`: hands a log row to the
/// connection's state as the row is written.
unsafe extern "C" fn note(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite passes `argc` values, valid during this call, and the
    // function's user data, which `install` made a `Hooked` reference that
    // lives as long as the function.
    unsafe {
        let hooked = &*ffi::sqlite3_user_data(ctx).cast_const().cast::<Hooked>();
        if argc == 4 {
            let args = std::slice::from_raw_parts(argv, 4);
            let seq = ffi::sqlite3_value_int64(args[0]);
            let (table, column, key) = (value(args[1]), value(args[2]), value(args[3]));
            if let (Some(table), Some(column)) = (table, column) {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    hooked.noted(seq, table, column, key);
                }));
            }
        }
        ffi::sqlite3_result_null(ctx);
    }
}

/// A function argument as text, `None` for NULL.
///
/// # Safety
/// `v` is a value SQLite passed to the function being called.
unsafe fn value(v: *mut ffi::sqlite3_value) -> Option<String> {
    // SAFETY: the contract; the text is copied before the call returns.
    unsafe {
        let text = ffi::sqlite3_value_text(v);
        if text.is_null() {
            return None;
        }
        let len = usize::try_from(ffi::sqlite3_value_bytes(v)).unwrap_or(0);
        Some(String::from_utf8_lossy(std::slice::from_raw_parts(text, len)).into_owned())
    }
}

/// Whether `conn` carries the hooks.
pub(super) async fn hooked(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is open and held exclusively through `handle`.
    Ok(unsafe { !ffi::sqlite3_get_clientdata(db, CLIENT_DATA.as_ptr()).is_null() })
}

unsafe extern "C" fn release(data: *mut c_void) {
    // SAFETY: `data` came from `Arc::into_raw` in `install`, and SQLite
    // releases each client data once.
    drop(unsafe { Arc::from_raw(data.cast_const().cast::<Hooked>()) });
}

unsafe extern "C" fn wal_hook(
    data: *mut c_void,
    db: *mut ffi::sqlite3,
    name: *const c_char,
    frames: c_int,
) -> c_int {
    // SAFETY: `data` is the state the connection's client data owns (see
    // `install`), alive while the connection is open; SQLite calls this on
    // `db` after a commit, where reading it is allowed.
    let hooked = unsafe { &*data.cast_const().cast::<Hooked>() };
    if catch_unwind(AssertUnwindSafe(|| unsafe { hooked.committed(db) })).is_err() {
        tracing::error!(
            "ultracache: applying a SQLite commit panicked; the background reader applies it"
        );
    }
    if frames >= CHECKPOINT_FRAMES {
        // SAFETY: called by SQLite on `db` for the database `name`, where a
        // WAL hook may checkpoint.
        unsafe { ffi::sqlite3_wal_checkpoint(db, name) };
    }
    ffi::SQLITE_OK
}
