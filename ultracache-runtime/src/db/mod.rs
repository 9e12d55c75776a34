//! Invalidation on commit for sqlx transactions (feature `sqlx`).
//!
//! Begin through [`begin`] instead of `pool.begin()`. Invalidations made
//! with the transaction's [`invalidate`](Transaction::invalidate) methods,
//! or anywhere inside [`scope`](Transaction::scope) (so also by
//! `#[invalidates]` functions), are queued; [`commit`](Transaction::commit)
//! commits and then applies them, so when it returns the writer's next read
//! already sees its write; a rollback, or a transaction dropped without
//! commit, applies none. Values computed inside the scope are not cached
//! (they may have read writes that never commit).
//!
//! ```no_run
//! # async fn demo(pool: sqlx::SqlitePool) -> Result<(), sqlx::Error> {
//! use ultracache::{db, Trackable};
//!
//! #[derive(Trackable)]
//! struct Post { id: i64 }
//!
//! let mut tx = db::begin(&pool).await?;
//! sqlx::query("UPDATE posts SET title = 'New' WHERE id = 1")
//!     .execute(&mut **tx)
//!     .await?;
//! tx.invalidate(&Post { id: 1 });
//! tx.commit().await?; // pages that showed post 1 are dropped now
//! # Ok(()) }
//! ```

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

use std::borrow::Borrow;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::dep::Dep;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::dep::Kind;
use crate::trackable::Trackable;
use crate::transaction::{Queue, Scoped};

/// A sqlx transaction whose invalidations wait for its commit. It derefs to
/// the `sqlx::Transaction` (`&mut **tx` is an executor).
#[must_use = "a transaction is rolled back (and its invalidations dropped) unless committed"]
pub struct Transaction<'c, DB: sqlx::Database> {
    inner: sqlx::Transaction<'c, DB>,
    queue: Arc<Queue>,
}

impl<DB: sqlx::Database> std::fmt::Debug for Transaction<'_, DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

/// Begins a transaction on `pool` whose invalidations wait for its commit.
pub async fn begin<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<Transaction<'static, DB>, sqlx::Error> {
    Ok(Transaction::wrap(pool.begin().await?))
}

impl<'c, DB: sqlx::Database> Transaction<'c, DB> {
    /// Wraps a transaction begun elsewhere.
    pub fn wrap(inner: sqlx::Transaction<'c, DB>) -> Self {
        Transaction {
            inner,
            queue: Queue::new(),
        }
    }

    /// Queues what writing `obj` invalidates (as [`invalidate`](crate::invalidate)).
    pub fn invalidate<T: Trackable + ?Sized>(&self, obj: &T) {
        self.scope_blocking(|| crate::invalidate(obj));
    }

    /// Queues the invalidation of the `T` with this id (as
    /// [`invalidate_id`](crate::invalidate_id)).
    pub fn invalidate_id<T: Trackable + ?Sized>(&self, id: impl Borrow<T::Id>) {
        self.scope_blocking(|| crate::invalidate_id::<T>(id));
    }

    /// Queues the invalidation of every `T` (as
    /// [`invalidate_kind`](crate::invalidate_kind)).
    pub fn invalidate_kind<T: Trackable + ?Sized>(&self) {
        self.scope_blocking(crate::invalidate_kind::<T>);
    }

    /// Queues the invalidation of `deps` (as [`invalidate_deps`](crate::invalidate_deps)).
    pub fn invalidate_deps(&self, deps: &[Dep]) {
        self.queue.push(deps, &[]);
    }

    /// Runs `f` inside the transaction: what it invalidates is queued.
    pub fn scope_blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        self.queue.scope_blocking(f)
    }

    /// `fut`, run inside the transaction: what it invalidates (through
    /// `#[invalidates]` functions too) is queued, and what it computes is
    /// not cached.
    pub fn scope<F: Future>(&self, fut: F) -> Scoped<F> {
        self.queue.scope(fut)
    }

    /// Commits, then applies the queued invalidations (the shared tier and
    /// every node first, then this process). When it returns, no read
    /// returns a value computed from the rows this transaction replaced.
    ///
    /// Meanwhile too, in this process: the queued invalidations are held
    /// from just before the commit, so a reader that already reads the new
    /// rows is never served a copy computed from the old ones (this
    /// process's copies are dropped first, and what is computed from the
    /// rows until the invalidations are applied is served but not stored).
    /// A failed or cancelled commit ends the hold after invalidating here.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Transaction { inner, queue } = self;
        let (deps, kinds) = queue.take();
        // Held from before the commit is visible until it is applied: a
        // reader that reads the new rows meanwhile is not served a copy
        // computed from the old ones, and what it computes is not stored.
        let held = (!deps.is_empty() || !kinds.is_empty())
            .then(|| crate::invalidation::HeldCommit::begin(deps.clone(), kinds.clone()));
        if let Err(e) = inner.commit().await {
            if let Some(held) = held {
                // Whether it committed is unknown: invalidated, then ended.
                held.end(false);
            }
            return Err(e);
        }
        crate::invalidation::apply_committed(&deps, &kinds).await;
        if let Some(held) = held {
            held.end(true);
        }
        Ok(())
    }

    /// Rolls back; nothing is invalidated.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Transaction { inner, queue } = self;
        let _ = queue.take();
        inner.rollback().await
    }
}

impl<'c, DB: sqlx::Database> Deref for Transaction<'c, DB> {
    type Target = sqlx::Transaction<'c, DB>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<DB: sqlx::Database> DerefMut for Transaction<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// How one column of a captured table maps its rows to dependencies.
///
/// ```
/// use ultracache::db::sqlite::Table;
/// use ultracache::Trackable;
///
/// #[derive(Trackable)]
/// struct Post { id: i64 }
///
/// let tables = vec![
///     // A row of `posts` is the Post its `id` names: a change refreshes
///     // that post and every list of posts.
///     Table::of::<Post>("posts", "id"),
///     // A row of `comments` belongs to the Post its `post_id` names: a new,
///     // changed or deleted comment refreshes that post (its comment list and
///     // count), not the others; a comment moved to another post refreshes
///     // both.
///     Table::belongs_to::<Post>("comments", "post_id"),
/// ];
/// # let _ = tables;
/// ```
#[derive(Clone, Debug)]
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub struct Table {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) kind: Kind,
    /// The rows are objects of the kind (not rows that belong to one).
    pub(crate) rows_are_objects: bool,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Table {
    /// The table `name`, whose rows are `T`s identified by column `key`: a
    /// change to a row refreshes that `T` and every list of `T`s (an insert
    /// also refreshes a "not found" cached for its key).
    pub fn of<T: Trackable + ?Sized>(name: &str, key: &str) -> Self {
        Table {
            name: name.to_owned(),
            key: key.to_owned(),
            kind: T::KIND,
            rows_are_objects: true,
        }
    }

    /// The table `name`, whose rows belong to the `T` that column `column`
    /// names (a post's comments, either side of a join table): a change to a
    /// row refreshes that `T` only — before and after the change, when the
    /// column itself changed. Several mappings may name one table.
    pub fn belongs_to<T: Trackable + ?Sized>(name: &str, column: &str) -> Self {
        Table {
            name: name.to_owned(),
            key: column.to_owned(),
            kind: T::KIND,
            rows_are_objects: false,
        }
    }

    /// The captured columns a model declares (`#[trackable(table = "…")]`
    /// and `#[trackable(belongs_to = …)]`): its key column, and each column
    /// naming an object its rows belong to.
    ///
    /// ```
    /// use ultracache::db::sqlite::Table;
    /// use ultracache::Trackable;
    ///
    /// #[derive(Trackable)]
    /// #[trackable(table = "posts")]
    /// struct Post { id: i64 }
    ///
    /// #[derive(Trackable)]
    /// #[trackable(table = "comments")]
    /// struct Comment {
    ///     id: i64,
    ///     #[trackable(belongs_to = Post)]
    ///     post_id: i64,
    /// }
    ///
    /// let tables = [Table::model::<Post>(), Table::model::<Comment>()].concat();
    /// assert_eq!(tables.len(), 3);
    /// ```
    pub fn model<T: Trackable>() -> Vec<Table> {
        T::mappings()
            .into_iter()
            .map(|m| Table {
                name: m.table.to_owned(),
                key: m.column.to_owned(),
                kind: m.kind,
                rows_are_objects: m.is_key,
            })
            .collect()
    }

    /// What a change whose logged value is `key` drops.
    pub(crate) fn deps(&self, key: &str, out: &mut Vec<Dep>) {
        row_deps(self.kind, key, out);
        if self.rows_are_objects {
            out.push(Dep::kind(self.kind));
        }
    }
}

/// The dependencies of a row whose key column holds `key` (as text): the
/// text as a string id, and, when it reads as an integer, that integer id
/// too. The log does not say which the model's id is: a text key made of
/// digits (`"007"`, a postcode) is a string id, an integer column logs its
/// digits; dropping both costs at most one needless drop.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn row_deps(kind: Kind, key: &str, out: &mut Vec<Dep>) {
    match (key.parse::<u64>(), key.parse::<i64>()) {
        (Ok(n), _) => out.push(Dep::object_key(kind, n)),
        (_, Ok(n)) => out.push(Dep::object(kind, &n)),
        _ => {}
    }
    out.push(Dep::object(kind, key));
}

#[cfg(all(test, any(feature = "sqlite", feature = "postgres")))]
mod tests {
    use super::*;

    const KIND: Kind = Kind::new("db.row");

    fn deps(key: &str) -> Vec<Dep> {
        let mut out = Vec::new();
        row_deps(KIND, key, &mut out);
        out
    }

    #[test]
    fn a_logged_key_reaches_the_object_whatever_the_type_of_its_id() {
        // Integer ids, as their columns log them.
        for n in [0i64, 7, -7, i64::MAX, i64::MIN] {
            assert!(deps(&n.to_string()).contains(&Dep::object(KIND, &n)), "{n}");
        }
        assert!(deps(&u64::MAX.to_string()).contains(&Dep::object(KIND, &u64::MAX)));
        // String ids, also those made of digits or signs.
        for s in [
            "hello",
            "007",
            "7",
            "+5",
            "-0",
            "",
            " 7",
            "1e3",
            "18446744073709551616",
        ] {
            assert!(deps(s).contains(&Dep::object(KIND, s)), "{s:?}");
        }
    }
}
