//! Registration: every `#[cached]` function and every model kind announces
//! itself at link time, so tools can list them.

use std::any::{Any, TypeId};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use crate::config::Timeout;

/// A `#[cached]` function: its metadata and its cache.
pub struct CachedFn {
    /// The function's name.
    pub name: &'static str,
    /// The module it is defined in.
    pub module: &'static str,
    /// The source file.
    pub file: &'static str,
    /// The line of the `#[cached]` attribute.
    pub line: u32,
    /// The store it names, if any.
    pub store: Option<&'static str>,
    /// How long its entries live.
    pub timeout: Timeout,
    /// How long an expired value is kept to serve when computing it again
    /// fails (`#[cached(stale_if_error = …)]`).
    pub stale_if_error: Option<std::time::Duration>,
    pub(crate) cache: OnceLock<Typed>,
    pub(crate) mismatch_logged: AtomicBool,
}

/// A `#[cached]` function's cache, made on its first call, with what the
/// hit path needs to reach its core in one step.
pub(crate) struct Typed {
    /// The `Cache<K, V>`.
    pub(crate) cache: Box<dyn Any + Send + Sync>,
    /// `TypeId::of::<Core<K, V>>()` when the cache is connected to its
    /// store (else the `TypeId` of `()`, which no core has).
    pub(crate) core_type: TypeId,
    /// The address of that core, which lives as long as the program (the
    /// cache holds it, and the cache is in a `static`).
    pub(crate) core: usize,
}

impl std::fmt::Debug for CachedFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedFn")
            .field("name", &self.name)
            .field("module", &self.module)
            .field("store", &self.store)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CachedFn {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        module: &'static str,
        file: &'static str,
        line: u32,
        store: Option<&'static str>,
        timeout: Timeout,
    ) -> Self {
        CachedFn {
            name,
            module,
            file,
            line,
            store,
            timeout,
            stale_if_error: None,
            cache: OnceLock::new(),
            mismatch_logged: AtomicBool::new(false),
        }
    }

    /// Keeps expired values for `grace` to serve when computing them again
    /// fails ([`Cache::stale_if_error`](crate::Cache::stale_if_error)).
    pub const fn stale_if_error(mut self, grace: std::time::Duration) -> Self {
        self.stale_if_error = Some(grace);
        self
    }
}

pub use crate::dep::ModelInfo;

#[doc(hidden)]
pub struct FnRegistration(pub &'static CachedFn);

inventory::collect!(FnRegistration);

/// Everything registered in this program; see [`registered`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Registered {
    /// Every `#[cached]` function, by module and name.
    pub functions: Vec<&'static CachedFn>,
    /// Every model kind, by kind name.
    pub models: Vec<&'static ModelInfo>,
}

/// Lists every `#[cached]` function and every `Trackable` model linked into
/// the program.
///
/// ```
/// use ultracache::{cached, Trackable};
///
/// #[derive(Trackable)]
/// #[trackable(kind = "docs.thing")]
/// struct Thing { id: u32 }
///
/// #[cached(timeout = 5)]
/// fn answer() -> u32 { 42 }
///
/// let reg = ultracache::registered();
/// assert!(reg.functions.iter().any(|f| f.name == "answer"));
/// assert!(reg.models.iter().any(|m| m.kind.name() == "docs.thing"));
/// ```
pub fn registered() -> Registered {
    let mut functions: Vec<_> = inventory::iter::<FnRegistration>
        .into_iter()
        .map(|r| r.0)
        .collect();
    functions.sort_by_key(|f| (f.module, f.name));
    let mut models: Vec<_> = inventory::iter::<ModelInfo>.into_iter().collect();
    models.sort_by_key(|m| m.kind.name());
    Registered { functions, models }
}
