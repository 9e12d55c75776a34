//! Cache models: typed records kept in the cache under keys made from their
//! key fields, instead of ad-hoc key strings and fragile pickling.
//!
//! `#[derive(CacheModel)]` (with `serde`'s derives) makes a struct a cache
//! model; [`CacheModel::save`] stores it, [`CacheModel::get`] loads it by its
//! key, [`Reference`] links one model to another by key.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use serde::de::{DeserializeOwned, Deserializer, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::cache::{Cache, Timeout};
use crate::dep::{Dep, Kind};
use crate::invalidation::invalidate_deps;
use crate::recorder::track_dep;

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
/// - Values are stored as postcard bytes. When a shared tier is configured
///   ([`Config::redis`](crate::Config::redis)) they go there too (unless
///   `local`), with the type's fingerprint: after a deploy that changes the
///   struct, old bytes read as a miss, never as the new type.
/// - `get` inside a cached computation records the object (found or not), so
///   a `save` or `delete` of it drops that computation's entries, here and on
///   every node; an object built by [`FromMiss`] depends on what it read.
pub trait CacheModel: Serialize + DeserializeOwned + Sized + 'static {
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
        get::<Self>(key)
    }

    /// Stores the object under its key, replacing what was there, and
    /// invalidates what was computed from the old one (on every node, and in
    /// the proxies). Referenced objects are saved on their own.
    fn save(&self) -> Result<(), SaveError> {
        save(self)
    }

    /// Drops the object stored for `key`, and what was computed from it.
    fn delete(key: &Self::Key) {
        invalidate_deps(&[Self::dep(key)]);
    }

    /// The dependency that stands for the object with this key.
    fn dep(key: &Self::Key) -> Dep {
        Dep::object(Self::KIND, key)
    }

    #[doc(hidden)]
    fn __set_key(&mut self, key: Self::Key);

    #[doc(hidden)]
    fn __cache() -> &'static ModelCache<Self>;

    #[doc(hidden)]
    fn __from_miss(key: &Self::Key) -> Option<Self>;
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

/// No object is stored for a key (and the model's [`FromMiss`], if any, found
/// none), or an object it references is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A link to another cache model, stored as its key: [`CacheModel::get`]
/// loads the referenced object with the one that holds the reference (and
/// fails with [`Missing`] when it is gone), so it is always the current one.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use ultracache::{CacheModel, Reference};
///
/// #[derive(CacheModel, Serialize, Deserialize)]
/// struct Team { #[cache(key)] name: String, city: String }
///
/// #[derive(CacheModel, Serialize, Deserialize)]
/// struct Player {
///     #[cache(key)] id: u32,
///     team: Reference<Team>,
///     mentor: Option<Reference<Player>>, // a model may reference its own type
/// }
///
/// let team = Team { name: "Rovers".into(), city: "Leeds".into() };
/// team.save().unwrap();
/// Player { id: 1, team: Reference::new(team), mentor: None }.save().unwrap();
///
/// let player = Player::get(&PlayerKey::new(1)).unwrap();
/// assert_eq!(player.team.get().unwrap().city, "Leeds");
/// ```
///
/// References are loaded depth first, up to 32 levels; a reference that
/// closes a cycle (an object that references itself, directly or through
/// others) and references deeper than that are loaded when first read, by
/// [`get`](Self::get). Serialized, a reference is its key alone.
pub struct Reference<T: CacheModel> {
    key: T::Key,
    value: OnceLock<Arc<T>>,
}

impl<T: CacheModel> Reference<T> {
    /// A reference to `obj` (which is already loaded).
    pub fn new(obj: T) -> Self {
        Reference {
            key: obj.key(),
            value: OnceLock::from(Arc::new(obj)),
        }
    }

    /// A reference to the object with `key`, loaded when first read.
    pub fn to(key: T::Key) -> Self {
        Reference {
            key,
            value: OnceLock::new(),
        }
    }

    /// The referenced object's key.
    pub fn key(&self) -> &T::Key {
        &self.key
    }

    /// The referenced object: the one loaded with the object holding the
    /// reference, or (if it was not loaded) the one in the cache now.
    pub fn get(&self) -> Result<&T, Missing> {
        if let Some(v) = self.value.get() {
            return Ok(v);
        }
        let loaded = Arc::new(T::get(&self.key)?);
        Ok(self.value.get_or_init(|| loaded))
    }

    /// The referenced object, if it is loaded.
    pub fn loaded(&self) -> Option<&T> {
        self.value.get().map(|v| &**v)
    }
}

impl<T: CacheModel> From<T> for Reference<T> {
    fn from(obj: T) -> Self {
        Reference::new(obj)
    }
}

impl<T: CacheModel> Clone for Reference<T> {
    fn clone(&self) -> Self {
        Reference {
            key: self.key.clone(),
            value: self.value.clone(),
        }
    }
}

impl<T: CacheModel> fmt::Debug for Reference<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reference")
            .field("key", &self.key)
            .field("loaded", &self.value.get().is_some())
            .finish()
    }
}

/// References are equal when they name the same object.
impl<T: CacheModel> PartialEq for Reference<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<T: CacheModel> Eq for Reference<T> {}

impl<T: CacheModel> Hash for Reference<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl<T: CacheModel> Serialize for Reference<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.key.serialize(serializer)
    }
}

impl<'de, T: CacheModel> Deserialize<'de> for Reference<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let reference = Reference::to(T::Key::deserialize(deserializer)?);
        if !loading::eager() || loading::deferred(T::dep(&reference.key)) {
            return Ok(reference);
        }
        match loading::paused(|| T::get(&reference.key)) {
            Ok(obj) => {
                let _ = reference.value.set(Arc::new(obj));
                Ok(reference)
            }
            Err(missing) => {
                loading::set_missing(missing);
                Err(D::Error::custom("a referenced object is missing"))
            }
        }
    }
}

/// Which objects this thread is loading, so that references load with their
/// holder and cycles stop.
mod loading {
    use super::*;

    /// Deeper references load when they are read.
    const MAX_DEPTH: usize = 32;

    thread_local! {
        static EAGER: Cell<bool> = const { Cell::new(false) };
        static STACK: RefCell<Vec<Dep>> = const { RefCell::new(Vec::new()) };
        static MISSING: RefCell<Option<Missing>> = const { RefCell::new(None) };
    }

    /// Whether references met now are loaded (while a `get` decodes).
    pub(super) fn eager() -> bool {
        EAGER.with(Cell::get)
    }

    /// Whether the object `dep` is one being loaded up the stack (a cycle),
    /// or too deep: its reference stays unloaded.
    pub(super) fn deferred(dep: Dep) -> bool {
        STACK.with(|s| {
            let s = s.borrow();
            s.len() >= MAX_DEPTH || s.contains(&dep)
        })
    }

    /// Runs `f` with eager loading off (a nested `get` turns it on again for
    /// its own bytes only).
    pub(super) fn paused<R>(f: impl FnOnce() -> R) -> R {
        let before = EAGER.with(|e| e.replace(false));
        let _restore = Restore(before);
        f()
    }

    pub(super) fn set_missing(m: Missing) {
        MISSING.with(|slot| *slot.borrow_mut() = Some(m));
    }

    pub(super) fn take_missing() -> Option<Missing> {
        MISSING.with(|slot| slot.borrow_mut().take())
    }

    /// Runs `f` (which decodes the object `dep`) with eager loading on.
    pub(super) fn decoding<R>(dep: Dep, f: impl FnOnce() -> R) -> R {
        STACK.with(|s| s.borrow_mut().push(dep));
        let before = EAGER.with(|e| e.replace(true));
        let _restore = Restore(before);
        let _pop = Pop;
        f()
    }

    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            EAGER.with(|e| e.set(self.0));
        }
    }

    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            STACK.with(|s| s.borrow_mut().pop());
        }
    }
}

/// A model's postcard bytes, as its cache keeps them.
#[derive(Clone)]
pub struct Stored(Arc<[u8]>);

impl Stored {
    fn weigh(&self) -> usize {
        self.0.len()
    }
}

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Stored;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Stored, E> {
                Ok(Stored(v.into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stored, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Stored(out.into()))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// The cache of one model type (what the derive declares).
pub struct ModelCache<M: CacheModel> {
    cache: Cache<M::Key, Stored>,
    _model: PhantomData<fn() -> M>,
}

impl<M: CacheModel> ModelCache<M> {
    /// The cache of `M`, named `name`.
    pub const fn new(
        name: &'static str,
        module: &'static str,
        timeout: Timeout,
        store: Option<&'static str>,
        local: bool,
    ) -> Self {
        let cache = Cache::new(name)
            .module(module)
            .with_timeout(timeout)
            .weigher(Stored::weigh);
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

fn get<M: CacheModel>(key: &M::Key) -> Result<M, Missing> {
    let dep = M::dep(key);
    // Found or not, what is computed now depends on this object: saving it
    // later must reach that computation.
    track_dep(dep);
    let cache = &M::__cache().cache;
    let stored = cache.try_get_or_compute(key.clone(), || {
        let Some(mut obj) = M::__from_miss(key) else {
            return Err(Missing::of::<M>(key));
        };
        track_dep(dep);
        obj.__set_key(key.clone());
        encode(&obj).map_err(|e| {
            tracing::error!(model = M::KIND.name(), "ultracache: {e}");
            Missing::of::<M>(key)
        })
    })?;
    loading::take_missing();
    match loading::decoding(dep, || postcard::from_bytes::<M>(&stored.0)) {
        Ok(obj) => Ok(obj),
        Err(e) => match loading::take_missing() {
            Some(mut missing) => {
                missing.referenced_by.get_or_insert(M::KIND.name());
                Err(missing)
            }
            None => {
                // Bytes its `Deserialize` refuses: dropped, read as a miss.
                tracing::warn!(
                    model = M::KIND.name(),
                    "ultracache: a stored `{}` did not decode ({e}); dropped",
                    M::KIND.name()
                );
                cache.invalidate(key);
                Err(Missing::of::<M>(key))
            }
        },
    }
}

fn save<M: CacheModel>(obj: &M) -> Result<(), SaveError> {
    let stored = encode(obj)?;
    let cache = &M::__cache().cache;
    if !cache.connected() {
        return Err(SaveError::NoStore {
            model: M::KIND.name(),
        });
    }
    let key = obj.key();
    let dep = M::dep(&key);
    invalidate_deps(&[dep]);
    // `false` here means a concurrent save or delete of this object came
    // after this one: it wins.
    cache.insert(key, stored, &[dep]);
    Ok(())
}

/// Puts "not a key field" errors on the field's type.
#[inline(always)]
pub fn assert_key_field<T: ModelKey>() {}
