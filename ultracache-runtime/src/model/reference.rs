//! `Reference<T>`: one cache model's link to another, stored as its key and
//! loaded after the object holding it is decoded.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{get_in, get_in_async, CacheModel, Loader, Missing, MAX_LOADED};
use crate::dep::Dep;

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
/// [`get`](Self::get). Serialized, a reference is its key alone. Clones share
/// the loaded object.
pub struct Reference<T: CacheModel> {
    key: T::Key,
    value: Arc<OnceLock<Arc<T>>>,
}

impl<T: CacheModel> Reference<T> {
    /// A reference to `obj`, loaded. It does not save `obj`: a `get` of the
    /// object holding the reference loads it from the cache, so save it too.
    pub fn new(obj: T) -> Self {
        Reference {
            key: obj.key(),
            value: Arc::new(OnceLock::from(Arc::new(obj))),
        }
    }

    /// A reference to the object with `key`, loaded when first read.
    pub fn to(key: T::Key) -> Self {
        Reference {
            key,
            value: Arc::default(),
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

    /// The async form of [`get`](Self::get).
    pub async fn get_async(&self) -> Result<&T, Missing> {
        if let Some(v) = self.value.get() {
            return Ok(v);
        }
        let loaded = Arc::new(T::get_async(&self.key).await?);
        Ok(self.value.get_or_init(|| loaded))
    }

    /// The referenced object, if it is loaded.
    pub fn loaded(&self) -> Option<&T> {
        self.value.get().map(|v| &**v)
    }
}

/// The last holder of a loaded reference drops what it loaded here, in a
/// loop rather than nested: a chain of references thousands deep (walked one
/// `get` at a time) is dropped without growing the stack.
impl<T: CacheModel> Drop for Reference<T> {
    fn drop(&mut self) {
        if let Some(slot) = Arc::get_mut(&mut self.value) {
            if let Some(obj) = slot.take() {
                drop_flat(Box::new(obj));
            }
        }
    }
}

thread_local! {
    /// Loaded objects waiting to be dropped, while a drop is under way on
    /// this thread.
    static DROPPING: RefCell<Option<Vec<Box<dyn std::any::Any>>>> = const { RefCell::new(None) };
}

fn drop_flat(obj: Box<dyn std::any::Any>) {
    // Inside a drop already: queued for its loop.
    let queued = DROPPING.try_with(|d| {
        let mut d = d.borrow_mut();
        match d.as_mut() {
            Some(queue) => {
                queue.push(obj);
                None
            }
            None => {
                *d = Some(Vec::new());
                Some(obj)
            }
        }
    });
    let mut next = match queued {
        Ok(Some(obj)) => Some(obj),
        // Queued, or the thread is exiting (its objects drop as usual).
        Ok(None) | Err(_) => return,
    };
    // Ends the loop's turn however it ends (a `Drop` that panics included).
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            let rest = DROPPING.try_with(|d| d.borrow_mut().take()).ok().flatten();
            drop(rest);
        }
    }
    let _done = Done;
    while let Some(obj) = next {
        drop(obj);
        next = DROPPING
            .try_with(|d| d.borrow_mut().as_mut().and_then(Vec::pop))
            .ok()
            .flatten();
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
            value: Arc::clone(&self.value),
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
        let reference: Reference<T> = Reference::to(T::Key::deserialize(deserializer)?);
        FOUND.with(|found| {
            if let Some(found) = found.borrow_mut().as_mut() {
                found.push(Box::new(Unloaded::<T> {
                    key: reference.key.clone(),
                    slot: Arc::clone(&reference.value),
                }));
            }
        });
        Ok(reference)
    }
}

/// A loading in progress, boxed: references load one another recursively.
pub(super) type Loading<'a> = Pin<Box<dyn Future<Output = Result<(), Missing>> + Send + 'a>>;

/// A reference met while decoding, to load once decoding is done.
pub(super) trait Pending: Send + Sync {
    /// The referenced object's dependency (to stop at cycles).
    fn dep(&self) -> Dep;
    /// Loads it, or takes the copy `loader` already loaded.
    fn load(&self, loader: &mut Loader) -> Result<(), Missing>;
    /// The async form of `load`.
    fn load_async<'a>(&'a self, loader: &'a mut Loader) -> Loading<'a>;
}

struct Unloaded<T: CacheModel> {
    key: T::Key,
    slot: Arc<OnceLock<Arc<T>>>,
}

impl<T: CacheModel> Pending for Unloaded<T> {
    fn dep(&self) -> Dep {
        T::dep(&self.key)
    }

    fn load(&self, loader: &mut Loader) -> Result<(), Missing> {
        if self.reuse(loader) {
            return Ok(());
        }
        let obj = get_in::<T>(&self.key, loader)?;
        self.keep(loader, obj);
        Ok(())
    }

    fn load_async<'a>(&'a self, loader: &'a mut Loader) -> Loading<'a> {
        Box::pin(async move {
            if self.reuse(loader) {
                return Ok(());
            }
            let obj = get_in_async::<T>(&self.key, loader).await?;
            self.keep(loader, obj);
            Ok(())
        })
    }
}

impl<T: CacheModel> Unloaded<T> {
    /// Whether there is nothing to load: the object was loaded already for
    /// this `get` (it is shared), or the `get` loaded enough (it loads when
    /// read).
    fn reuse(&self, loader: &Loader) -> bool {
        if let Some(obj) = loader.loaded.get(&self.dep()) {
            if let Ok(obj) = Arc::clone(obj).downcast::<T>() {
                let _ = self.slot.set(obj);
                return true;
            }
        }
        loader.loaded.len() >= MAX_LOADED
    }

    fn keep(&self, loader: &mut Loader, obj: T) {
        let obj = Arc::new(obj);
        loader.loaded.insert(
            self.dep(),
            Arc::clone(&obj) as Arc<dyn std::any::Any + Send + Sync>,
        );
        let _ = self.slot.set(obj);
    }
}

thread_local! {
    /// The references met by the decoding running on this thread.
    static FOUND: RefCell<Option<Vec<Box<dyn Pending>>>> = const { RefCell::new(None) };
}

/// Runs `decode` and returns, with its result, the references it met.
pub(super) fn collecting<R>(decode: impl FnOnce() -> R) -> (R, Vec<Box<dyn Pending>>) {
    /// Puts back what was collecting before, even if `decode` panics.
    struct Restore(Option<Vec<Box<dyn Pending>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            FOUND.with(|f| *f.borrow_mut() = outer);
        }
    }
    let restore = Restore(FOUND.with(|f| f.borrow_mut().replace(Vec::new())));
    let result = decode();
    let found = FOUND.with(|f| f.borrow_mut().take());
    drop(restore);
    (result, found.unwrap_or_default())
}
