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

/// The entries linked under one dependency. Most dependencies have one
/// dependent: that one is kept inline, without a table of its own.
#[derive(Default)]
enum Links {
    #[default]
    None,
    One(Arc<dyn Entry>),
    /// Keyed by entry ids, which the process counts out (no request chooses
    /// them): a fixed, fast hasher. Boxed, so that the common cases above
    /// stay small in the dependency's table.
    #[allow(clippy::box_collection)]
    Many(Box<StdHashMap<u64, Arc<dyn Entry>, foldhash::fast::FixedState>>),
}

impl Links {
    /// Links `entry`; whether it was not linked yet.
    fn insert(&mut self, id: u64, entry: Arc<dyn Entry>) -> bool {
        match self {
            Links::None => {
                *self = Links::One(entry);
                true
            }
            Links::One(one) if one.id() == id => {
                *self = Links::One(entry);
                false
            }
            Links::One(_) => {
                let Links::One(first) = std::mem::take(self) else {
                    unreachable!("matched above")
                };
                let mut many = StdHashMap::with_capacity_and_hasher(4, Default::default());
                many.insert(first.id(), first);
                many.insert(id, entry);
                *self = Links::Many(Box::new(many));
                true
            }
            Links::Many(many) => many.insert(id, entry).is_none(),
        }
    }

    /// Unlinks entry `id`; whether it was linked.
    fn remove(&mut self, id: u64) -> bool {
        match self {
            Links::One(one) if one.id() == id => {
                *self = Links::None;
                true
            }
            Links::Many(many) => many.remove(&id).is_some(),
            _ => false,
        }
    }

    fn len(&self) -> usize {
        match self {
            Links::None => 0,
            Links::One(_) => 1,
            Links::Many(many) => many.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn values(&self) -> Box<dyn Iterator<Item = &Arc<dyn Entry>> + '_> {
        match self {
            Links::None => Box::new(std::iter::empty()),
            Links::One(entry) => Box::new(std::iter::once(entry)),
            Links::Many(many) => Box::new(many.values()),
        }
    }

    fn into_values(self) -> Vec<Arc<dyn Entry>> {
        match self {
            Links::None => Vec::new(),
            Links::One(entry) => vec![entry],
            Links::Many(many) => many.into_values().collect(),
        }
    }
}

/// The links of one kind: under the kind itself, and under each object of
/// it (keyed by the object's id key, without an `Option` in every key).
#[derive(Default)]
struct Table {
    whole: Links,
    objects: HashMap<u64, Links>,
}

impl Table {
    fn get(&self, id: Option<u64>) -> Option<&Links> {
        match id {
            None => Some(&self.whole).filter(|l| !l.is_empty()),
            Some(id) => self.objects.get(&id),
        }
    }

    fn entry(&mut self, id: Option<u64>) -> &mut Links {
        match id {
            None => &mut self.whole,
            Some(id) => self.objects.entry(id).or_default(),
        }
    }

    /// Unlinks entry `entry` from the links of `id`, dropping links left
    /// empty; whether it was linked.
    fn unlink(&mut self, id: Option<u64>, entry: u64) -> bool {
        match id {
            None => self.whole.remove(entry),
            Some(id) => {
                let Some(links) = self.objects.get_mut(&id) else {
                    return false;
                };
                let removed = links.remove(entry);
                if links.is_empty() {
                    self.objects.remove(&id);
                }
                removed
            }
        }
    }

    fn remove(&mut self, id: Option<u64>) -> Links {
        match id {
            None => std::mem::take(&mut self.whole),
            Some(id) => self.objects.remove(&id).unwrap_or_default(),
        }
    }

    fn is_empty(&self) -> bool {
        self.whole.is_empty() && self.objects.is_empty()
    }

    /// Dependencies with at least one entry.
    fn len(&self) -> usize {
        usize::from(!self.whole.is_empty()) + self.objects.len()
    }

    fn links(&self) -> impl Iterator<Item = &Links> {
        std::iter::once(&self.whole).chain(self.objects.values())
    }

    fn into_links(self) -> impl Iterator<Item = Links> {
        std::iter::once(self.whole).chain(self.objects.into_values())
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
            let links = shard
                .kinds
                .entry(dep.model_kind())
                .or_default()
                .entry(dep.id_key());
            if links.insert(id, Arc::clone(entry)) {
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
        let links = table.remove(dep.id_key());
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
