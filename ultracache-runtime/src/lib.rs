//! The runtime of [ultracache](https://docs.rs/ultracache): the recorder, the
//! registry, the stores and invalidation. Depend on `ultracache`, which
//! re-exports what users need from here together with the macros.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(unreachable_pub, rust_2018_idioms)]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod cache;
mod clock;
mod config;
#[cfg(feature = "sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
pub mod db;
mod dep;
mod entry;
mod flight;
mod fragment;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod http;
mod invalidation;
mod listen;
mod mark;
#[cfg(feature = "minijinja")]
#[cfg_attr(docsrs, doc(cfg(feature = "minijinja")))]
pub mod minijinja;
mod model;
mod names;
mod paths;
pub(crate) mod protocol;
#[cfg(feature = "purge")]
#[cfg_attr(docsrs, doc(cfg(feature = "purge")))]
pub mod purge;
mod recorder;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod registration;
mod registry;
mod runtime;
mod state;
mod stats;
mod store;
mod sync;
pub mod telemetry;
#[cfg(feature = "redis")]
mod tier;
mod trackable;
mod transaction;
pub(crate) mod versions;
mod wait;
mod weigh;

#[doc(hidden)]
#[allow(missing_docs, unreachable_pub)]
pub mod private;

pub use cache::{
    Cache, CacheKey, CacheValue, EntryInfo, Lookup, OkOnly, Outcome, Plain, Recording, Timeout,
};
pub use config::{
    Config, ConfigError, StoreConfig, DEFAULT_MAX_BYTES, DEFAULT_STORE, DEFAULT_TIMEOUT,
};
pub use dep::{id_key, Dep, IdHasher, Kind};
/// A borrowed form of a key that a [`Cache`] can be read by (`Cache::get`).
pub use equivalent::Equivalent;
pub use fragment::fragment;
pub use invalidation::{
    clear, clear_store, dependents, invalidate, invalidate_any_of, invalidate_async,
    invalidate_deps, invalidate_deps_async, invalidate_id, invalidate_kind, invalidate_paths,
    run_pending_tasks, stats, writing, Writing,
};
pub use model::{AsyncFromMiss, CacheModel, FromMiss, Missing, ModelKey, Reference, SaveError};
pub use paths::{path_dep, DependentPaths, PATH_KIND};
pub use recorder::{
    capture, capture_future, record, record_future, track, track_dep, track_deps, track_id,
    track_kind, track_value, Captured, Frame, FrameExt, InFrame, Recorded, RecordedFuture,
};
pub use registration::{registered, CachedFn, ModelInfo, Registered};
pub use stats::{CacheStats, Stats};
pub use store::DEFAULT_MAX_ENTRIES;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use tier::MemoryTier;
pub use trackable::{Mapping, Models, Trackable};
pub use weigh::HeapSize;
