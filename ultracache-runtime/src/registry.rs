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
    Many(Box<Many>),
}

/// A list searched in order holds at most this many entries; more are
/// kept in a table by entry id.
const FEW: usize = 16;

/// Two or more entries under one dependency.
enum Many {
    /// A short list: two or three entries take 112 bytes here, where the
    /// smallest table took 272.
    Few(Vec<Arc<dyn Entry>>),
    /// Keyed by entry ids, which are addresses (no request chooses them):
    /// a fixed, fast hasher.
    Lots(StdHashMap<u64, Arc<dyn Entry>, foldhash::fast::FixedState>),
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
                let few = vec![Arc::clone(one), entry];
                *self = Links::Many(Box::new(Many::Few(few)));
                true
            }
            Links::Many(many) => many.insert(id, entry),
        }
    }

    /// Unlinks entry `id`.
    fn remove(&mut self, id: u64) -> Unlinked {
        match self {
            Links::One(one) if one.id() == id => Unlinked::Last,
            Links::One(_) => Unlinked::No,
            Links::Many(many) => {
                if !many.remove(id) {
                    return Unlinked::No;
                }
                // One left: inline again, its list freed.
                if let Many::Few(few) = &mut **many {
                    if let [_] = few.as_slice() {
                        if let Some(last) = few.pop() {
                            *self = Links::One(last);
                        }
                    }
                }
                Unlinked::Yes
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Links::One(_) => 1,
            Links::Many(many) => match &**many {
                Many::Few(few) => few.len(),
                Many::Lots(lots) => lots.len(),
            },
        }
    }

    fn values(&self) -> Box<dyn Iterator<Item = &Arc<dyn Entry>> + '_> {
        match self {
            Links::One(entry) => Box::new(std::iter::once(entry)),
            Links::Many(many) => match &**many {
                Many::Few(few) => Box::new(few.iter()),
                Many::Lots(lots) => Box::new(lots.values()),
            },
        }
    }

    fn into_values(self) -> Vec<Arc<dyn Entry>> {
        match self {
            Links::One(entry) => vec![entry],
            Links::Many(many) => match *many {
                Many::Few(few) => few,
                Many::Lots(lots) => lots.into_values().collect(),
            },
        }
    }
}

impl Many {
    /// Links `entry`; whether it was not linked yet.
    fn insert(&mut self, id: u64, entry: Arc<dyn Entry>) -> bool {
        match self {
            Many::Few(few) => {
                if let Some(old) = few.iter_mut().find(|e| e.id() == id) {
                    *old = entry;
                    return false;
                }
                if few.len() < FEW {
                    few.push(entry);
                    return true;
                }
                let mut lots = StdHashMap::with_capacity_and_hasher(2 * FEW, Default::default());
                lots.extend(few.drain(..).map(|e| (e.id(), e)));
                lots.insert(id, entry);
                *self = Many::Lots(lots);
                true
            }
            Many::Lots(lots) => lots.insert(id, entry).is_none(),
        }
    }

    /// Unlinks entry `id`; whether it was linked. Never leaves it empty
    /// unless it held `id` alone (the caller then drops it).
    fn remove(&mut self, id: u64) -> bool {
        match self {
            Many::Few(few) => match few.iter().position(|e| e.id() == id) {
                Some(at) => {
                    few.swap_remove(at);
                    if few.capacity() > 4 * few.len().max(2) {
                        few.shrink_to(2 * few.len());
                    }
                    true
                }
                None => false,
            },
            Many::Lots(lots) => {
                if lots.remove(&id).is_none() {
                    return false;
                }
                if lots.len() <= FEW / 2 {
                    *self = Many::Few(lots.drain().map(|(_, e)| e).collect());
                } else if lots.capacity() > 4 * lots.len() {
                    lots.shrink_to(2 * lots.len());
                }
                true
            }
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
                    self.shrink();
                }
                unlinked != Unlinked::No
            }
        }
    }

    fn remove(&mut self, id: Option<u64>) -> Option<Links> {
        match id {
            None => self.whole.take(),
            Some(id) => {
                let links = self.objects.remove(&id);
                self.shrink();
                links
            }
        }
    }

    /// A table that held many more objects than it does gives back its
    /// room (std's tables never shrink by themselves).
    fn shrink(&mut self) {
        if self.objects.capacity() > 4 * self.objects.len().max(16) {
            self.objects.shrink_to(2 * self.objects.len());
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

    /// The kind named `name` (whose hash is `hash`) if some entry depends
    /// on it or on one of its objects: a look at every shard, for names read
    /// from outside that are not otherwise known.
    pub(crate) fn kind_named(&self, name: &str, hash: u64) -> Option<Kind> {
        self.shards.iter().find_map(|shard| {
            lock(shard)
                .kinds
                .keys()
                .find(|kind| kind.hash64() == hash && kind.name() == name)
                .copied()
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mark::Mark;
    use crate::state::State;

    struct Linked {
        deps: [Dep; 1],
        state: State,
        mark: Mark,
    }

    impl Entry for Linked {
        fn id(&self) -> u64 {
            (self as *const Self).addr() as u64
        }
        fn deps(&self) -> &[Dep] {
            &self.deps
        }
        fn weight(&self) -> u32 {
            1
        }
        fn kill(&self, _: crate::entry::Cause) {}
        fn state(&self) -> &State {
            &self.state
        }
        fn mark(&self) -> &Mark {
            &self.mark
        }
        fn basis(&self) -> u64 {
            0
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    const ROW: Kind = Kind::new("registry.tests.row");

    /// Entries linked under one dependency, from one to past a short
    /// list's length, unlinked in an order that crosses every change of
    /// form both ways: each count, and what a take returns, stays exact.
    #[test]
    fn links_change_form_and_lose_nothing() {
        let registry = Registry::new(1);
        for dep in [Dep::object(ROW, &7u64), Dep::kind(ROW)] {
            for n in [1, 2, 3, FEW - 1, FEW, FEW + 1, 3 * FEW] {
                let entries: Vec<Arc<dyn Entry>> = (0..n)
                    .map(|_| {
                        Arc::new(Linked {
                            deps: [dep],
                            state: State::pending(),
                            mark: Mark::new(),
                        }) as Arc<dyn Entry>
                    })
                    .collect();
                for (i, e) in entries.iter().enumerate() {
                    registry.register(e);
                    // Linking again changes nothing.
                    registry.register(e);
                    assert_eq!(registry.dependents(&dep), i + 1);
                }
                assert_eq!(registry.links(), n);
                // Every other one, then the rest from the end.
                let order: Vec<usize> = (0..n)
                    .step_by(2)
                    .chain((0..n).filter(|i| i % 2 == 1).rev())
                    .collect();
                for (done, &i) in order.iter().enumerate().take(n / 2 + 1) {
                    let id = entries[i].id();
                    registry.unregister(id, [dep].iter());
                    registry.unregister(id, [dep].iter());
                    assert_eq!(registry.dependents(&dep), n - done - 1);
                }
                let left: std::collections::HashSet<u64> = order[(n / 2 + 1).min(n)..]
                    .iter()
                    .map(|&i| entries[i].id())
                    .collect();
                let taken: std::collections::HashSet<u64> =
                    registry.take(&dep).iter().map(|e| e.id()).collect();
                assert_eq!(taken, left, "{n} entries under {dep:?}");
                assert_eq!(registry.links(), 0);
                assert_eq!(registry.dependencies(), 0);
                // Only the entries themselves hold them now.
                assert!(entries.iter().all(|e| Arc::strong_count(e) == 1));
            }
        }
    }
}
