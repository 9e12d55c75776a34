//! The process-wide runtime: the stores built from the installed
//! configuration and the list of caches in use (for statistics and `clear`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use crate::config::{Config, ConfigError, DEFAULT_STORE};
use crate::stats::CacheStats;
use crate::store::Store;
#[cfg(feature = "redis")]
use crate::tier::SharedTier;

/// What the runtime needs of a cache, whatever its key and value types.
pub(crate) trait CacheHandle: Send + Sync {
    fn stats(&self) -> CacheStats;
    fn clear(&self);
    fn sweep_expired(&self);
}

pub(crate) struct Runtime {
    default: Arc<Store>,
    stores: HashMap<String, Arc<Store>>,
    caches: Mutex<Vec<Weak<dyn CacheHandle>>>,
    #[cfg(feature = "redis")]
    tier: Option<Arc<dyn SharedTier>>,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

pub(crate) fn get() -> &'static Runtime {
    RUNTIME.get_or_init(|| Runtime::new(Config::default()))
}

pub(crate) fn started() -> bool {
    RUNTIME.get().is_some()
}

pub(crate) fn install(config: Config) -> Result<(), ConfigError> {
    let mut installed = false;
    RUNTIME.get_or_init(|| {
        installed = true;
        Runtime::new(config)
    });
    if installed {
        Ok(())
    } else {
        Err(ConfigError::AlreadyInstalled)
    }
}

impl Config {
    /// Installs this configuration for the life of the process.
    ///
    /// Fails if a configuration was installed already, if a cache was used
    /// before (it started the embedded default), or if a `#[cached]` function
    /// names a store this configuration lacks.
    pub fn install(self) -> Result<(), ConfigError> {
        if started() {
            return Err(ConfigError::AlreadyInstalled);
        }
        for f in crate::registration::registered().functions {
            if let Some(store) = f.store {
                if store != DEFAULT_STORE && !self.stores.contains_key(store) {
                    return Err(ConfigError::UnknownStore {
                        cache: format!("{}::{}", f.module, f.name),
                        store: store.to_owned(),
                    });
                }
            }
        }
        install(self)
    }
}

impl Runtime {
    fn new(config: Config) -> Self {
        Runtime {
            default: Arc::new(Store::new(DEFAULT_STORE, &config.default)),
            stores: config
                .stores
                .iter()
                .map(|(name, c)| (name.clone(), Arc::new(Store::new(name, c))))
                .collect(),
            caches: Mutex::new(Vec::new()),
            #[cfg(feature = "redis")]
            tier: start_tier(&config),
        }
    }

    /// The shared tier, when one is configured.
    #[cfg(feature = "redis")]
    pub(crate) fn tier(&self) -> Option<&Arc<dyn SharedTier>> {
        self.tier.as_ref()
    }

    /// The store named `name` (the default store for `None`).
    pub(crate) fn store(&self, name: Option<&str>) -> Option<Arc<Store>> {
        match name {
            None | Some(DEFAULT_STORE) => Some(Arc::clone(&self.default)),
            Some(name) => self.stores.get(name).cloned(),
        }
    }

    pub(crate) fn stores(&self) -> impl Iterator<Item = &Arc<Store>> {
        std::iter::once(&self.default).chain(self.stores.values())
    }

    pub(crate) fn register_cache(&self, cache: Weak<dyn CacheHandle>) {
        let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        caches.retain(|c| c.strong_count() > 0);
        caches.push(cache);
    }

    pub(crate) fn caches(&self) -> Vec<Arc<dyn CacheHandle>> {
        let caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        caches.iter().filter_map(Weak::upgrade).collect()
    }
}

/// A shared-tier backend that can start from a configuration (registered
/// with `inventory::submit!`; the Redis one is in [`redis`](crate::redis)).
#[cfg(feature = "redis")]
pub(crate) struct TierBackend {
    pub(crate) start: fn(&Config) -> Option<Arc<dyn SharedTier>>,
}

#[cfg(feature = "redis")]
inventory::collect!(TierBackend);

/// The shared tier the configuration names, if any.
#[cfg(feature = "redis")]
fn start_tier(config: &Config) -> Option<Arc<dyn SharedTier>> {
    if let Some(memory) = &config.memory_tier {
        return Some(Arc::clone(&memory.0) as Arc<dyn SharedTier>);
    }
    inventory::iter::<TierBackend>
        .into_iter()
        .find_map(|backend| (backend.start)(config))
}
