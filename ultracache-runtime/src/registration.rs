//! Registration: every `#[cached]` function and every model kind announces
//! itself at link time, so tools can list them.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::OnceLock;

use crate::cache::{Cache, CacheKey, CacheValue, Timeout};
use crate::dep::Kind;

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
    cache: OnceLock<Box<dyn Any + Send + Sync>>,
    mismatch_logged: AtomicBool,
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
            cache: OnceLock::new(),
            mismatch_logged: AtomicBool::new(false),
        }
    }

    /// The function's cache for `#[cached(shared)]`: values also go through
    /// the shared tier.
    #[doc(hidden)]
    pub fn shared_cache<K, V>(&'static self) -> Option<&'static Cache<K, V>>
    where
        K: CacheKey + serde::Serialize,
        V: CacheValue + serde::Serialize + serde::de::DeserializeOwned,
    {
        self.typed(|c| c.shared())
    }

    /// The function's cache, typed by the key and value the call site infers.
    ///
    /// One function has one cache. A method of a generic `impl` is one
    /// function for every instantiation: if two instantiations have different
    /// key or value types, the second finds the cache typed for the first and
    /// computes without caching (logged once).
    #[doc(hidden)]
    pub fn cache<K: CacheKey, V: CacheValue>(&'static self) -> Option<&'static Cache<K, V>> {
        self.typed(|c| c)
    }

    fn typed<K: CacheKey, V: CacheValue>(
        &'static self,
        finish: impl FnOnce(Cache<K, V>) -> Cache<K, V>,
    ) -> Option<&'static Cache<K, V>> {
        let typed = self
            .cache
            .get_or_init(|| {
                let cache = Cache::<K, V>::new(self.name)
                    .module(self.module)
                    .with_timeout(self.timeout);
                Box::new(finish(match self.store {
                    Some(store) => cache.store(store),
                    None => cache,
                }))
            })
            .downcast_ref();
        if typed.is_none() && !self.mismatch_logged.swap(true, Relaxed) {
            tracing::error!(
                function = self.name,
                module = self.module,
                "ultracache: `{}::{}` is called with another key or value type than \
                 its cache was created for (a method of a generic impl?); \
                 these calls are not cached",
                self.module,
                self.name
            );
        }
        typed
    }
}

/// A model kind, registered by `#[derive(Trackable)]`.
#[derive(Debug)]
pub struct ModelInfo {
    /// The kind.
    pub kind: Kind,
    /// The Rust type's name.
    pub type_name: &'static str,
    /// The module the type is defined in.
    pub module: &'static str,
}

#[doc(hidden)]
pub struct FnRegistration(pub &'static CachedFn);

inventory::collect!(FnRegistration);
inventory::collect!(ModelInfo);

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
