//! The registry: the reverse index from a dependency to the entries computed
//! from it. Sharded by dependency; kept in step with evictions and expiry, so
//! it never outgrows the stores.

use std::collections::HashMap as StdHashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};

use crate::dep::{Dep, Kind};
use crate::entry::Entry;
use crate::sync::{lock, Mutex, MutexGuard};

const SHARDS: usize = 64;

/// Keyed with a random seed (ids can come from requests); the model checker
/// needs a fixed one (the same exploration every run).
#[cfg(not(feature = "loom"))]
type Hasher = std::hash::RandomState;
#[cfg(feature = "loom")]
type Hasher = foldhash::fast::FixedState;

type HashMap<K, V> = StdHashMap<K, V, Hasher>;

/// The entries linked under one dependency: never empty (a dependency left
/// with none is removed). Most dependencies have one dependent: that one is
/// kept inline, without a table of its own. Two variants, so that the enum
/// is the size of its fat pointer (16 bytes): the dependency's table holds
/// many of them.
enum Links {
    One(Arc<dyn Entry>),
    /// Keyed by entry ids, which the process counts out (no request chooses
    /// them): a fixed, fast hasher. Boxed, so that the common case above
    /// stays small in the dependency's table.
    #[allow(clippy::box_collection)]
    Many(Box<StdHashMap<u64, Arc<dyn Entry>, foldhash::fast::FixedState>>),
}

/// What unlinking an entry did.
#[derive(PartialEq, Eq)]
enum Unlinked {
    /// It was not linked there.
    No,
    /// Unlinked; others remain.
    Yes,
    /// Unlinked, and none remain: the links are to be removed.
    Last,
}

impl Links {
    /// Links `entry`; whether it was not linked yet.
    fn insert(&mut self, id: u64, entry: Arc<dyn Entry>) -> bool {
        match self {
            Links::One(one) if one.id() == id => {
                *one = entry;
                false
            }
            Links::One(one) => {
                let mut many = StdHashMap::with_capacity_and_hasher(4, Default::default());
                many.insert(one.id(), Arc::clone(one));
                many.insert(id, entry);
                *self = Links::Many(Box::new(many));
                true
            }
            Links::Many(many) => many.insert(id, entry).is_none(),
        }
    }

    /// Unlinks entry `id`.
    fn remove(&mut self, id: u64) -> Unlinked {
        match self {
            Links::One(one) if one.id() == id => Unlinked::Last,
            Links::One(_) => Unlinked::No,
            Links::Many(many) => match many.remove(&id) {
                None => Unlinked::No,
                Some(_) if many.is_empty() => Unlinked::Last,
                Some(_) => Unlinked::Yes,
            },
        }
    }

    fn len(&self) -> usize {
        match self {
            Links::One(_) => 1,
            Links::Many(many) => many.len(),
        }
    }

    fn values(&self) -> Box<dyn Iterator<Item = &Arc<dyn Entry>> + '_> {
        match self {
            Links::One(entry) => Box::new(std::iter::once(entry)),
            Links::Many(many) => Box::new(many.values()),
        }
    }

    fn into_values(self) -> Vec<Arc<dyn Entry>> {
        match self {
            Links::One(entry) => vec![entry],
            Links::Many(many) => many.into_values().collect(),
        }
    }
}

/// The links of one kind: under the kind itself, and under each object of
/// it (keyed by the object's id key, without an `Option` in every key).
#[derive(Default)]
struct Table {
    whole: Option<Links>,
    objects: HashMap<u64, Links>,
}

impl Table {
    fn get(&self, id: Option<u64>) -> Option<&Links> {
        match id {
            None => self.whole.as_ref(),
            Some(id) => self.objects.get(&id),
        }
    }

    /// Links entry `entry_id` under `id`; whether it was not linked yet.
    fn insert(&mut self, id: Option<u64>, entry_id: u64, entry: Arc<dyn Entry>) -> bool {
        let slot = match id {
            None => &mut self.whole,
            Some(id) => match self.objects.entry(id) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    return o.into_mut().insert(entry_id, entry);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Links::One(entry));
                    return true;
                }
            },
        };
        match slot {
            Some(links) => links.insert(entry_id, entry),
            None => {
                *slot = Some(Links::One(entry));
                true
            }
        }
    }

    /// Unlinks entry `entry` from the links of `id`, dropping links left
    /// empty; whether it was linked.
    fn unlink(&mut self, id: Option<u64>, entry: u64) -> bool {
        match id {
            None => {
                let unlinked = self
                    .whole
                    .as_mut()
                    .map_or(Unlinked::No, |l| l.remove(entry));
                if unlinked == Unlinked::Last {
                    self.whole = None;
                }
                unlinked != Unlinked::No
            }
            Some(id) => {
                let Some(links) = self.objects.get_mut(&id) else {
                    return false;
                };
                let unlinked = links.remove(entry);
                if unlinked == Unlinked::Last {
                    self.objects.remove(&id);
                }
                unlinked != Unlinked::No
            }
        }
    }

    fn remove(&mut self, id: Option<u64>) -> Option<Links> {
        match id {
            None => self.whole.take(),
            Some(id) => self.objects.remove(&id),
        }
    }

    fn is_empty(&self) -> bool {
        self.whole.is_none() && self.objects.is_empty()
    }

    /// Dependencies with at least one entry.
    fn len(&self) -> usize {
        usize::from(self.whole.is_some()) + self.objects.len()
    }

    fn links(&self) -> impl Iterator<Item = &Links> {
        self.whole.iter().chain(self.objects.values())
    }

    fn into_links(self) -> impl Iterator<Item = Links> {
        self.whole.into_iter().chain(self.objects.into_values())
    }
}

#[derive(Default)]
struct Shard {
    kinds: HashMap<Kind, Table>,
}

pub(crate) struct Registry {
    shards: Box<[Mutex<Shard>]>,
    links: AtomicUsize,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::new(SHARDS));

pub(crate) fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    pub(crate) fn new(shards: usize) -> Self {
        Registry {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            links: AtomicUsize::new(0),
        }
    }

    fn shard(&self, dep: &Dep) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(dep.hash64() as usize) % self.shards.len()])
    }

    /// Links `entry` under each of its dependencies.
    pub(crate) fn register(&self, entry: &Arc<dyn Entry>) {
        let id = entry.id();
        for dep in entry.deps() {
            let mut shard = self.shard(dep);
            let table = shard.kinds.entry(dep.model_kind()).or_default();
            if table.insert(dep.id_key(), id, Arc::clone(entry)) {
                self.links.fetch_add(1, Relaxed);
            }
        }
    }

    /// Unlinks entry `id` from `deps`, dropping dependencies left with no entry.
    pub(crate) fn unregister<'a>(&self, id: u64, deps: impl IntoIterator<Item = &'a Dep>) {
        for dep in deps {
            let mut shard = self.shard(dep);
            let kind = dep.model_kind();
            let Some(table) = shard.kinds.get_mut(&kind) else {
                continue;
            };
            if table.unlink(dep.id_key(), id) {
                self.links.fetch_sub(1, Relaxed);
            }
            if table.is_empty() {
                shard.kinds.remove(&kind);
            }
        }
    }

    /// Removes and returns every entry linked under `dep`, each doomed
    /// before the shard's lock is released (see [`protocol`](crate::protocol)).
    pub(crate) fn take(&self, dep: &Dep) -> Vec<Arc<dyn Entry>> {
        let mut shard = self.shard(dep);
        let kind = dep.model_kind();
        let Some(table) = shard.kinds.get_mut(&kind) else {
            return Vec::new();
        };
        let Some(links) = table.remove(dep.id_key()) else {
            return Vec::new();
        };
        if table.is_empty() {
            shard.kinds.remove(&kind);
        }
        for entry in links.values() {
            entry.state().doom();
        }
        drop(shard);
        self.links.fetch_sub(links.len(), Relaxed);
        links.into_values()
    }

    /// Removes and returns every entry linked under any dependency of
    /// `kind`, each doomed under its shard's lock.
    pub(crate) fn take_kind(&self, kind: Kind) -> Vec<Arc<dyn Entry>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let table = {
                let mut shard = lock(shard);
                let table = shard.kinds.remove(&kind);
                for entry in table.iter().flat_map(Table::links).flat_map(Links::values) {
                    entry.state().doom();
                }
                table
            };
            for links in table.into_iter().flat_map(Table::into_links) {
                self.links.fetch_sub(links.len(), Relaxed);
                out.extend(links.into_values());
            }
        }
        out
    }

    /// Links between dependencies and entries.
    pub(crate) fn links(&self) -> usize {
        self.links.load(Relaxed)
    }

    /// Distinct dependencies with at least one entry.
    pub(crate) fn dependencies(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).kinds.values().map(Table::len).sum::<usize>())
            .sum()
    }

    /// The entries linked under `dep`, without removing them.
    pub(crate) fn dependents(&self, dep: &Dep) -> usize {
        self.shard(dep)
            .kinds
            .get(&dep.model_kind())
            .and_then(|t| t.get(dep.id_key()))
            .map_or(0, Links::len)
    }
}
