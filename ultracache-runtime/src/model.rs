//! Cache models: typed records kept in the cache under keys made from their
//! key fields, instead of ad-hoc key strings and fragile pickling.
//!
//! `#[derive(CacheModel)]` (with `serde`'s derives) makes a struct a cache
//! model; [`CacheModel::save`] stores it, [`CacheModel::get`] loads it by its
//! key, [`Reference`] links one model to another by key.

mod reference;
mod stored;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cache::{Cache, Outcome, Timeout};
use crate::dep::{Dep, Kind};
use crate::invalidation::{
    invalidate_deps, invalidate_deps_async, invalidate_deps_stamped, invalidate_deps_stamped_async,
};
use crate::recorder::track_dep;

pub use reference::Reference;
pub use stored::Stored;

/// References load depth first down to this depth; deeper ones load when read.
const MAX_DEPTH: usize = 32;

/// One `get` loads at most this many referenced objects; the others load
/// when read.
const MAX_LOADED: usize = 1024;

/// The state of one `get` and the references it loads: the objects being
/// loaded (to stop at cycles) and those loaded, each once however many
/// references lead to it.
#[derive(Default)]
struct Loader {
    stack: Vec<Dep>,
    loaded: HashMap<Dep, Arc<dyn Any + Send + Sync>>,
}

impl Loader {
    /// Enters the object `dep`, whose references are `pending`, when they
    /// load now (there are some, and the `get` is not too deep yet).
    fn enter(&mut self, dep: Dep, pending: &[Box<dyn reference::Pending>]) -> bool {
        if pending.is_empty() || self.stack.len() >= MAX_DEPTH {
            return false;
        }
        self.stack.push(dep);
        true
    }

    /// Whether a reference to `dep` closes a cycle: its object is being
    /// loaded above.
    fn in_cycle(&self, dep: Dep) -> bool {
        self.stack.contains(&dep)
    }

    /// Leaves the object `enter` entered; a missing reference names the `M`
    /// that held it.
    fn leave<M: CacheModel>(&mut self, loaded: Result<(), Missing>) -> Result<(), Missing> {
        self.stack.pop();
        loaded.map_err(|m| m.via(M::KIND.name()))
    }
}

/// What a key field of a cache model must be: serde (its bytes are part of
/// the stored key), hashable and comparable (the in-process key), printable
/// (in [`Missing`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a key field of a cache model",
    label = "a `#[cache(key)]` field must be `Serialize`, `Deserialize`, `Hash`, `Eq`, `Clone`, `Debug`, `Send` and `Sync`"
)]
pub trait ModelKey:
    Serialize + DeserializeOwned + Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static
{
}
impl<T> ModelKey for T where
    T: Serialize + DeserializeOwned + Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static
{
}

/// A struct kept in the cache under a key built from its key fields: derive
/// it (with `serde::Serialize` and `serde::Deserialize`).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use ultracache::{CacheModel, Missing};
///
/// #[derive(CacheModel, Serialize, Deserialize, Debug, PartialEq)]
/// #[cache(timeout = 600)]                   // optional: the store's default otherwise
/// struct Workplace {
///     #[cache(key)]
///     name: String,
///     phone: String,
/// }
///
/// let acme = Workplace { name: "Acme".into(), phone: "555-0100".into() };
/// acme.save().unwrap();
/// let key = WorkplaceKey { name: "Acme".into() }; // generated: the key fields
/// assert_eq!(Workplace::get(&key).unwrap(), acme);
///
/// Workplace::delete(&key);
/// assert!(matches!(Workplace::get(&key), Err(Missing { .. })));
/// ```
///
/// The derive takes, on the struct:
///
/// | argument | meaning |
/// |---|---|
/// | `timeout = 600` | entries live this many whole seconds (or a `Duration` expression) |
/// | `forever` | entries live until deleted, invalidated or evicted |
/// | `name = "app.user"` | the stable name keys and dependencies are made from; by default the type's path (`my_crate::models::User`) |
/// | `store = "name"` | keep entries in a named store of the [`Config`](crate::Config) |
/// | `local` | keep entries in this process even when a shared tier (Redis) is configured |
/// | `crate = "path"` | where `ultracache` is, for crates that re-export it |
///
/// and `#[cache(key)]` on each key field (at least one). The key is the
/// model's name with the key fields' values in declaration order, typed: a
/// key `42u32` and a key `"42"` are different keys, and two models never
/// share keys. The derive generates `<Type>Key`, a struct with the key fields
/// (public), `new` taking them in order, and `From` for a single key field.
///
/// - Values are stored as postcard bytes; `get` returns the stored object
///   read back (fields under `#[serde(skip)]` come back as their default).
///   When a shared tier is configured ([`Config::redis`](crate::Config::redis))
///   they go there too (unless `local`), with the type's fingerprint: after a
///   deploy that changes the struct, old bytes read as a miss, never as the
///   new type. The fingerprint sees the fields serde shows; a field type with
///   a hand-written `Deserialize` that serde cannot trace is told apart by its
///   name and size only — when changing such a type, give the model a new
///   `name` (`"app.user.v2"`).
/// - `get` inside a cached computation records the object (found or not), so
///   a `save` or `delete` of it drops that computation's entries, here and on
///   every node; an object built by [`FromMiss`] depends on what it read.
pub trait CacheModel: Serialize + DeserializeOwned + Send + Sync + Sized + 'static {
    /// The generated key struct (`<Type>Key`).
    type Key: ModelKey;

    /// The model's stable name as a dependency kind: `save` invalidates
    /// `KIND:<key>`.
    const KIND: Kind;

    /// This object's key.
    fn key(&self) -> Self::Key;

    /// Loads the object stored for `key`, with its references; on a miss,
    /// builds it with [`FromMiss`] when the model implements it (and stores
    /// it). [`Missing`] when neither has it, or when an object it references
    /// is missing.
    fn get(key: &Self::Key) -> Result<Self, Missing> {
        get_in::<Self>(key, &mut Loader::default())
    }

    /// The async form of [`get`](Self::get): the shared tier is read without
    /// blocking a thread, and a miss is built with [`AsyncFromMiss`] when the
    /// model implements it (else with [`FromMiss`]). Concurrent misses on one
    /// key wait for one build and share its answer, found or not.
    fn get_async(key: &Self::Key) -> impl Future<Output = Result<Self, Missing>> + Send {
        async move { get_in_async::<Self>(key, &mut Loader::default()).await }
    }

    /// Like [`get`](Self::get), with `build` in place of [`FromMiss`]: on a
    /// miss, the object `build` returns is stored (with the key fields set to
    /// `key`, depending on what `build` read) and returned. The builder can
    /// borrow what it needs (a database pool, a request's context).
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use ultracache::CacheModel;
    ///
    /// #[derive(CacheModel, Serialize, Deserialize)]
    /// struct Summary { #[cache(key)] id: u32, words: usize }
    ///
    /// let text = "three little words";
    /// let s = Summary::get_or_build(&SummaryKey::new(1), || {
    ///     Some(Summary { id: 1, words: text.split(' ').count() })
    /// });
    /// assert_eq!(s.unwrap().words, 3);
    /// ```
    fn get_or_build(
        key: &Self::Key,
        build: impl FnOnce() -> Option<Self>,
    ) -> Result<Self, Missing> {
        get_with::<Self>(key, &mut Loader::default(), build)
    }

    /// The async form of [`get_or_build`](Self::get_or_build): `build` is
    /// awaited on a miss (once, however many callers miss together).
    fn get_or_build_async<F>(
        key: &Self::Key,
        build: F,
    ) -> impl Future<Output = Result<Self, Missing>> + Send
    where
        F: Future<Output = Option<Self>> + Send,
    {
        async move { get_with_async::<Self, F>(key, &mut Loader::default(), build).await }
    }

    /// Stores the object under its key, replacing what was there, and
    /// invalidates what was computed from the old one (on every node, and in
    /// the proxies). Referenced objects are saved on their own. Of concurrent
    /// saves and deletes of one object, the last to invalidate wins, in Redis
    /// and in every process. With the shared tier unreachable, the object is
    /// saved in this process only (the tier logs the outage).
    fn save(&self) -> Result<(), SaveError> {
        save(self)
    }

    /// The async form of [`save`](Self::save): waits for the shared tier
    /// without blocking a thread. A future dropped before it finishes may
    /// leave the object absent (a miss), never the old one.
    fn save_async(&self) -> impl Future<Output = Result<(), SaveError>> + Send {
        save_async(self)
    }

    /// Drops the object stored for `key`, and what was computed from it.
    fn delete(key: &Self::Key) {
        invalidate_deps(&[Self::dep(key)]);
    }

    /// The async form of [`delete`](Self::delete).
    fn delete_async(key: &Self::Key) -> impl Future<Output = ()> + Send {
        let dep = Self::dep(key);
        async move {
            invalidate_deps_async(&[dep]).await;
        }
    }

    /// The dependency that stands for the object with this key. With a key of
    /// one integer or string field, it is what [`Dep::parse`] reads from
    /// `name:value`: `ultracache invalidate app.user:bob` drops user `bob`.
    fn dep(key: &Self::Key) -> Dep {
        Dep::object(Self::KIND, key)
    }

    #[doc(hidden)]
    fn __set_key(&mut self, key: Self::Key);

    #[doc(hidden)]
    fn __cache() -> &'static ModelCache<Self>;

    #[doc(hidden)]
    fn __from_miss(key: &Self::Key) -> Option<Self>;

    #[doc(hidden)]
    fn __from_miss_async(key: &Self::Key) -> impl Future<Output = Option<Self>> + Send;
}

/// Builds a cache model that is not in the cache: implement it next to
/// `#[derive(CacheModel)]` and [`CacheModel::get`] calls it on a miss; what it
/// returns is stored (with the key fields set to the key asked for) and
/// returned. What it reads is recorded: invalidating one of those objects drops
/// the stored model.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use ultracache::{CacheModel, FromMiss};
///
/// #[derive(CacheModel, Serialize, Deserialize)]
/// struct Profile { #[cache(key)] user_id: u64, display_name: String }
///
/// impl FromMiss for Profile {
///     fn from_miss(key: &ProfileKey) -> Option<Self> {
///         // e.g. a database query; `None` when there is no such user
///         Some(Profile { user_id: key.user_id, display_name: format!("user {}", key.user_id) })
///     }
/// }
///
/// assert_eq!(Profile::get(&ProfileKey::new(7)).unwrap().display_name, "user 7");
/// ```
pub trait FromMiss: CacheModel {
    /// The object for `key`, or `None` when there is none.
    fn from_miss(key: &Self::Key) -> Option<Self>;
}

/// The async form of [`FromMiss`], for models built from async sources (a
/// database pool, an HTTP API): [`CacheModel::get_async`] awaits it on a miss
/// (the synchronous [`CacheModel::get`] does not call it). What it reads is
/// recorded across `.await`s.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use ultracache::{AsyncFromMiss, CacheModel};
///
/// #[derive(CacheModel, Serialize, Deserialize)]
/// struct Quote { #[cache(key)] symbol: String, price_cents: u64 }
///
/// impl AsyncFromMiss for Quote {
///     async fn from_miss(key: &QuoteKey) -> Option<Self> {
///         // e.g. `sqlx::query_as(…).fetch_optional(&pool).await.ok()?`
///         Some(Quote { symbol: key.symbol.clone(), price_cents: 12_345 })
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let q = Quote::get_async(&QuoteKey::new("ACME".into())).await.unwrap();
/// assert_eq!(q.price_cents, 12_345);
/// # });
/// ```
pub trait AsyncFromMiss: CacheModel {
    /// The object for `key`, or `None` when there is none.
    fn from_miss(key: &Self::Key) -> impl Future<Output = Option<Self>> + Send;
}

/// No object is stored for a key (and the model's [`FromMiss`], if any, found
/// none), or an object it references is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Missing {
    /// The kind of the object that is missing.
    pub model: &'static str,
    /// Its key, as `Debug` prints it.
    pub key: String,
    /// The kind of the object whose reference led to it, if any.
    pub referenced_by: Option<&'static str>,
}

impl Missing {
    fn of<M: CacheModel>(key: &M::Key) -> Self {
        Missing {
            model: M::KIND.name(),
            key: format!("{key:?}"),
            referenced_by: None,
        }
    }

    /// This missing object was referenced by a `by` (unless it already names
    /// the object whose reference led to it).
    fn via(mut self, by: &'static str) -> Self {
        self.referenced_by.get_or_insert(by);
        self
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no `{}` {} in the cache", self.model, self.key)?;
        if let Some(by) = self.referenced_by {
            write!(f, " (referenced by a `{by}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Missing {}

/// Why [`CacheModel::save`] stored nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveError {
    /// A field's `Serialize` failed.
    Encode {
        /// The model's kind.
        model: &'static str,
        /// What serde said.
        message: String,
    },
    /// The model names a store the configuration does not have.
    NoStore {
        /// The model's kind.
        model: &'static str,
    },
}

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaveError::Encode { model, message } => {
                write!(f, "a `{model}` could not be encoded: {message}")
            }
            SaveError::NoStore { model } => write!(
                f,
                "`{model}` names a store that is not configured: nothing was saved"
            ),
        }
    }
}

impl std::error::Error for SaveError {}

/// The cache of one model type (what the derive declares).
pub struct ModelCache<M: CacheModel> {
    cache: Cache<M::Key, Stored>,
    _model: PhantomData<fn() -> M>,
}

impl<M: CacheModel> ModelCache<M> {
    /// The cache of `M`, named `name`; `key_heap` weighs a key's heap
    /// against a store bounded in bytes.
    pub const fn new(
        name: &'static str,
        module: &'static str,
        timeout: Timeout,
        store: Option<&'static str>,
        local: bool,
        key_heap: fn(&M::Key) -> usize,
    ) -> Self {
        let cache = Cache::new(name)
            .module(module)
            .with_timeout(timeout)
            .weigher(Stored::weigh)
            .key_weigher(key_heap);
        let cache = match store {
            Some(store) => cache.store(store),
            None => cache,
        };
        let cache = if local { cache } else { cache.shared_as::<M>() };
        ModelCache {
            cache,
            _model: PhantomData,
        }
    }
}

fn encode<M: CacheModel>(obj: &M) -> Result<Stored, SaveError> {
    postcard::to_stdvec(obj)
        .map(|bytes| Stored(bytes.into()))
        .map_err(|e| SaveError::Encode {
            model: M::KIND.name(),
            message: e.to_string(),
        })
}

/// How a model's cache treats a build: the bytes are stored; a build that
/// found nothing (`Err(Some(missing))`) is the answer of every caller that
/// waited for it (they get `Err(None)`, and depend on what it read).
struct Absence;

type Built = Result<Stored, Option<Missing>>;

impl Outcome<Built> for Absence {
    type Value = Stored;
    fn value(result: &Built) -> Option<&Stored> {
        result.as_ref().ok()
    }
    fn wrap(value: Stored) -> Built {
        Ok(value)
    }
    fn shared_miss() -> Option<Built> {
        Some(Err(None))
    }
}

/// What a miss stores: the object built (with the key fields set to `key`),
/// depending on itself; `Missing` when nothing was built.
fn built<M: CacheModel>(key: &M::Key, obj: Option<M>) -> Result<Stored, Missing> {
    let Some(mut obj) = obj else {
        return Err(Missing::of::<M>(key));
    };
    track_dep(M::dep(key));
    obj.__set_key(key.clone());
    encode(&obj).map_err(|e| {
        tracing::error!(model = M::KIND.name(), "ultracache: {e}");
        Missing::of::<M>(key)
    })
}

/// The object in `stored`, and the references it holds (not loaded yet).
fn decode<M: CacheModel>(
    key: &M::Key,
    stored: &Stored,
) -> Result<(M, Vec<Box<dyn reference::Pending>>), Missing> {
    match reference::collecting(|| postcard::from_bytes::<M>(&stored.0)) {
        (Ok(obj), pending) => Ok((obj, pending)),
        (Err(e), _) => {
            // Bytes its `Deserialize` refuses: dropped (here and in the
            // shared tier), read as a miss.
            tracing::warn!(
                model = M::KIND.name(),
                "ultracache: a stored `{}` did not decode ({e}); dropped",
                M::KIND.name()
            );
            M::__cache().cache.discard(key);
            Err(Missing::of::<M>(key))
        }
    }
}

/// Decodes stored model bytes as a read does: the object and how many
/// references it holds. For the fuzz targets only.
#[cfg(fuzzing)]
pub(crate) fn fuzz_decode<M: DeserializeOwned>(bytes: &[u8]) -> Option<(M, usize)> {
    let (decoded, pending) = reference::collecting(|| postcard::from_bytes::<M>(bytes));
    decoded.ok().map(|m| (m, pending.len()))
}

/// `get`, inside the loading of the object `loader` started from.
fn get_in<M: CacheModel>(key: &M::Key, loader: &mut Loader) -> Result<M, Missing> {
    get_with::<M>(key, loader, || M::__from_miss(key))
}

/// `get_in` that builds a miss with `build`.
fn get_with<M: CacheModel>(
    key: &M::Key,
    loader: &mut Loader,
    build: impl FnOnce() -> Option<M>,
) -> Result<M, Missing> {
    let dep = M::dep(key);
    // Found or not, what is computed now depends on this object: saving it
    // later must reach that computation.
    track_dep(dep);
    let cache = &M::__cache().cache;
    let mut build = Some(build);
    let mut tries = 0;
    let (obj, pending) = loop {
        tries += 1;
        // A hit looks the key up by reference: no clone of it.
        let stored = match cache.get(key) {
            Some(stored) => stored,
            None => cache
                .resolve::<_, Absence>(key.clone(), None, || {
                    built(key, build.take().and_then(|build| build())).map_err(Some)
                })
                .map_err(|m| m.unwrap_or_else(|| Missing::of::<M>(key)))?,
        };
        match decode::<M>(key, &stored) {
            Ok(decoded) => break decoded,
            // Unreadable bytes are gone now: build the object afresh, once.
            Err(_) if tries == 1 && build.is_some() => continue,
            Err(missing) => return Err(missing),
        }
    };
    if loader.enter(dep, &pending) {
        let mut loaded = Ok(());
        for p in &pending {
            if !loader.in_cycle(p.dep()) {
                loaded = p.load(loader);
                if loaded.is_err() {
                    break;
                }
            }
        }
        loader.leave::<M>(loaded)?;
    }
    Ok(obj)
}

/// The async form of [`get_in`].
async fn get_in_async<M: CacheModel>(key: &M::Key, loader: &mut Loader) -> Result<M, Missing> {
    get_with_async::<M, _>(key, loader, M::__from_miss_async(key)).await
}

/// The async form of [`get_with`].
async fn get_with_async<M: CacheModel, F: Future<Output = Option<M>>>(
    key: &M::Key,
    loader: &mut Loader,
    build: F,
) -> Result<M, Missing> {
    let dep = M::dep(key);
    track_dep(dep);
    let cache = &M::__cache().cache;
    let mut build = Some(build);
    let mut tries = 0;
    let (obj, pending) = loop {
        tries += 1;
        let stored = match cache.get(key) {
            Some(stored) => stored,
            None => {
                let build = build.take();
                cache
                    .resolve_async::<_, Absence, _>(key.clone(), None, async {
                        match build {
                            Some(build) => built(key, build.await).map_err(Some),
                            None => Err(Some(Missing::of::<M>(key))),
                        }
                    })
                    .await
                    .map_err(|m| m.unwrap_or_else(|| Missing::of::<M>(key)))?
            }
        };
        match decode::<M>(key, &stored) {
            Ok(decoded) => break decoded,
            // Unreadable bytes are gone now: build the object afresh, once.
            Err(_) if tries == 1 && build.is_some() => continue,
            Err(missing) => return Err(missing),
        }
    };
    if loader.enter(dep, &pending) {
        let mut loaded = Ok(());
        for p in &pending {
            if !loader.in_cycle(p.dep()) {
                loaded = p.load_async(loader).await;
                if loaded.is_err() {
                    break;
                }
            }
        }
        loader.leave::<M>(loaded)?;
    }
    Ok(obj)
}

/// What `save` writes: the bytes, the key and the object's dependency;
/// `NoStore` when the model's store is not configured.
fn to_save<M: CacheModel>(obj: &M) -> Result<(Stored, M::Key, Dep), SaveError> {
    let stored = encode(obj)?;
    // Serde attributes postcard cannot carry (`skip_serializing_if`,
    // `flatten`, untagged enums) write bytes that never read back: say so
    // now, not as a miss on every read.
    if let Err(e) = postcard::from_bytes::<M>(&stored.0) {
        return Err(SaveError::Encode {
            model: M::KIND.name(),
            message: format!(
                "its bytes do not read back ({e}); postcard cannot carry \
                 `skip_serializing_if`, `flatten` or untagged enums"
            ),
        });
    }
    if !M::__cache().cache.connected() {
        return Err(SaveError::NoStore {
            model: M::KIND.name(),
        });
    }
    let key = obj.key();
    let dep = M::dep(&key);
    Ok((stored, key, dep))
}

// Saving drops what was computed from the old object, then stores the new
// one. The shared tier refuses the new one if a later save or delete of the
// object came in between (it invalidated after this save's tick), and so does
// this process (against its own tick for the save's invalidation): of
// concurrent saves and deletes, the last to invalidate wins, everywhere.

fn save<M: CacheModel>(obj: &M) -> Result<(), SaveError> {
    let (stored, key, dep) = to_save(obj)?;
    let (_, tick, local) = invalidate_deps_stamped(&[dep]);
    M::__cache()
        .cache
        .write_after(key, stored, &[dep], tick.unwrap_or(u64::MAX), local);
    Ok(())
}

async fn save_async<M: CacheModel>(obj: &M) -> Result<(), SaveError> {
    let (stored, key, dep) = to_save(obj)?;
    let (_, tick, local) = invalidate_deps_stamped_async(&[dep]).await;
    M::__cache()
        .cache
        .write_after_async(key, stored, &[dep], tick.unwrap_or(u64::MAX), local)
        .await;
    Ok(())
}

/// Puts "not a key field" errors on the field's type.
#[inline(always)]
pub fn assert_key_field<T: ModelKey>() {}
