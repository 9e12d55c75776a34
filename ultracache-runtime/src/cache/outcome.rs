//! What a cache holds: its keys, its values, and which results of a
//! computation are stored.

use std::hash::Hash;

/// What a cache key must be: hashable, comparable, clonable, shareable and
/// owned. Every such type is one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a cache key",
    label = "this key must be `Hash + Eq + Clone + Send + Sync + 'static`",
    note = "choose the key with `key = …` (e.g. an id or a tuple of ids), or leave an argument out with `skip(…)`"
)]
pub trait CacheKey: Hash + Eq + Clone + Send + Sync + 'static {}
impl<T: Hash + Eq + Clone + Send + Sync + 'static> CacheKey for T {}

/// What a cached value must be: clonable (a hit returns a clone), shareable and
/// owned. Every such type is one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached",
    label = "a cached value must be `Clone + Send + Sync + 'static`",
    note = "derive `Clone`, or return an `Arc` of the value"
)]
pub trait CacheValue: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> CacheValue for T {}

/// How a computation's result maps to the value stored: every result
/// ([`Plain`]), or only the `Ok` of a `Result` ([`OkOnly`]).
pub trait Outcome<R> {
    /// The part of the result that is stored.
    type Value;
    /// The value to store, if this result is stored at all.
    fn value(result: &R) -> Option<&Self::Value>;
    /// The result a hit returns.
    fn wrap(value: Self::Value) -> R;
    /// What callers that waited for a computation return when its result
    /// was not stored: `None` (the default) has each compute on its own;
    /// `Some` shares a definitive answer ("there is no such object").
    #[doc(hidden)]
    fn shared_miss() -> Option<R> {
        None
    }
    /// Whether `result` is a failure that a value kept past its timeout may
    /// answer instead ([`Cache::stale_if_error`](crate::Cache::stale_if_error)):
    /// by default, a result that is not stored and is not a definitive
    /// "nothing" (the `Err` of a `Result`).
    #[doc(hidden)]
    fn failed(result: &R) -> bool {
        Self::value(result).is_none() && Self::shared_miss().is_none()
    }
}

/// Every result is stored (including `None`).
#[derive(Clone, Copy, Debug)]
pub struct Plain;

/// Only `Ok` values are stored; an `Err` is recomputed next time.
#[derive(Clone, Copy, Debug)]
pub struct OkOnly;

impl<R> Outcome<R> for Plain {
    type Value = R;
    fn value(result: &R) -> Option<&R> {
        Some(result)
    }
    fn wrap(value: R) -> R {
        value
    }
}

impl<T, E> Outcome<Result<T, E>> for OkOnly {
    type Value = T;
    fn value(result: &Result<T, E>) -> Option<&T> {
        result.as_ref().ok()
    }
    fn wrap(value: T) -> Result<T, E> {
        Ok(value)
    }
}
