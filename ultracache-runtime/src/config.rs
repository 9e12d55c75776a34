//! Configuration: named stores with capacities and default timeouts,
//! installed once at start. With no configuration at all, one in-process
//! store named `"default"` is used.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The name of the store used when a cache names none.
pub const DEFAULT_STORE: &str = "default";

/// The default timeout of a store whose configuration sets none: five minutes,
/// as in Django's cache framework.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The configuration of one store.
///
/// ```
/// use std::time::Duration;
/// use ultracache::StoreConfig;
///
/// let sessions = StoreConfig::new()
///     .max_entries(10_000)
///     .max_bytes(64 << 20)
///     .default_timeout(Duration::from_secs(600));
/// # let _ = sessions;
/// ```
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub(crate) max_entries: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) default_timeout: Option<Duration>,
}

/// Bytes a store holds when its capacity in bytes is not configured.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_entries: None,
            max_bytes: Some(DEFAULT_MAX_BYTES),
            default_timeout: Some(DEFAULT_TIMEOUT),
        }
    }
}

impl StoreConfig {
    /// A store of at most [`DEFAULT_MAX_ENTRIES`](crate::DEFAULT_MAX_ENTRIES)
    /// entries and [`DEFAULT_MAX_BYTES`] bytes (each entry weighs its value's
    /// estimated size, and at least its share of the bytes per entry), whose
    /// entries expire after [`DEFAULT_TIMEOUT`] unless their cache says
    /// otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds at most `n` entries; the least useful are evicted past it.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }

    /// Holds at most about `n` bytes of entries: keys and values (as
    /// estimated by [`HeapSize`](crate::HeapSize)), their dependency lists
    /// and their bookkeeping (about 220 bytes for an entry of one
    /// dependency, 100 more per further dependency), including entries that
    /// ended and whose memory the store has not freed yet.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }

    /// The timeout of caches in this store that set none.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = Some(timeout);
        self
    }

    /// Caches in this store that set no timeout keep their entries until they
    /// are invalidated or evicted.
    pub fn no_default_timeout(mut self) -> Self {
        self.default_timeout = None;
        self
    }
}

/// The runtime's configuration, installed once at start.
///
/// ```
/// use ultracache::{Config, StoreConfig};
///
/// Config::new()
///     .default_store(StoreConfig::new().max_entries(50_000))
///     .store("sessions", StoreConfig::new().max_bytes(16 << 20))
///     .install()
///     .expect("ultracache is configured once, before first use");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub(crate) default: StoreConfig,
    pub(crate) stores: BTreeMap<String, StoreConfig>,
    #[cfg(feature = "redis")]
    pub(crate) redis_url: Option<String>,
    #[cfg(feature = "redis")]
    pub(crate) redis_cluster: Option<Vec<String>>,
    #[cfg(feature = "redis")]
    pub(crate) redis_sharded: Option<bool>,
    #[cfg(feature = "redis")]
    pub(crate) redis_prefix: Option<String>,
    #[cfg(feature = "redis")]
    pub(crate) redis_timeout: Option<Duration>,
    #[cfg(feature = "redis")]
    pub(crate) memory_tier: Option<crate::tier::MemoryTier>,
}

impl Config {
    /// The embedded default: one in-process store named `"default"`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures the store caches use when they name none.
    pub fn default_store(mut self, config: StoreConfig) -> Self {
        self.default = config;
        self
    }

    /// Adds a named store (`#[cached(store = "name")]`).
    pub fn store(mut self, name: impl Into<String>, config: StoreConfig) -> Self {
        let name = name.into();
        if name == DEFAULT_STORE {
            self.default = config;
        } else {
            self.stores.insert(name, config);
        }
        self
    }

    /// Shares `#[cached(shared)]` caches through Redis at this URL (without it,
    /// `ULTRACACHE_REDIS_URL` is used when set).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Shares `#[cached(shared)]` caches through a Redis Cluster (or Valkey
    /// cluster) reached through these nodes (`redis://host:port` each; any
    /// of its nodes will do, the rest are discovered). Without it,
    /// `ULTRACACHE_REDIS_CLUSTER` (comma-separated URLs) is used when set.
    ///
    /// Redirects (`MOVED`, `ASK`) and topology changes are followed. Every
    /// key of a prefix shares one hash tag, so the prefix's entries and
    /// registry live on the primary that owns its slot: give applications (or
    /// parts of one) their own prefixes to spread them over primaries.
    ///
    /// ```no_run
    /// ultracache::Config::new()
    ///     .redis_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .install()
    ///     .unwrap();
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_cluster<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.redis_cluster = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// Spreads the shared tier's keys over the slots of a Redis Cluster (or
    /// Valkey cluster), so that its entries, dependency registries and
    /// generations — and their load — grow with the number of primaries.
    /// Without it (or `ULTRACACHE_REDIS_SHARDED=1`), every key of a prefix
    /// shares one hash tag and lives on one primary.
    ///
    /// The freshness promise is the same in both layouts: once an
    /// invalidation returned, no node reads from Redis a value computed
    /// from the data before it. A hit is one `GET` either way; a store and an
    /// invalidation take a few round trips more (one per step, each step's
    /// commands sent together). The layouts keep their keys apart: switching
    /// starts from an empty shared tier.
    ///
    /// ```no_run
    /// ultracache::Config::new()
    ///     .redis_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .redis_sharded(true)
    ///     .install()
    ///     .unwrap();
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_sharded(mut self, sharded: bool) -> Self {
        self.redis_sharded = Some(sharded);
        self
    }

    /// Starts every Redis key with `{prefix}` (default `ultracache`, or
    /// `ULTRACACHE_REDIS_PREFIX`): applications, or tests, sharing one Redis
    /// keep apart.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = Some(prefix.into());
        self
    }

    /// How long one Redis call may take before the tier counts as down
    /// (default 250 ms).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = Some(timeout);
        self
    }

    /// Shares caches through an in-process [`MemoryTier`](crate::MemoryTier)
    /// instead of Redis: the multi-node protocol, testable without a server.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn memory_tier(mut self, tier: &crate::tier::MemoryTier) -> Self {
        self.memory_tier = Some(tier.clone());
        self
    }
}

/// Why a configuration was refused, or a cache could not find its store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The runtime was configured, or started with the default, before.
    AlreadyInstalled,
    /// A cache names a store that is not configured.
    UnknownStore {
        /// The cache (`module::function`).
        cache: String,
        /// The store it names.
        store: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::AlreadyInstalled => f.write_str(
                "ultracache is already configured: install the configuration once, \
                 before the first cached call",
            ),
            ConfigError::UnknownStore { cache, store } => write!(
                f,
                "cache `{cache}` uses store \"{store}\", which is not configured: \
                 add `.store(\"{store}\", StoreConfig::new())` to the ultracache Config"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// How long a cache keeps its entries.
#[derive(Clone, Copy, Debug)]
pub enum Timeout {
    /// The default timeout of the cache's store.
    StoreDefault,
    /// Until invalidated or evicted.
    Forever,
    /// A fixed duration.
    After(Duration),
    /// A duration computed once, when the cache is first used.
    Computed(fn() -> Duration),
}

impl Timeout {
    /// The duration entries live, given the store's default; `None` for ever.
    pub fn resolve(&self, store_default: Option<Duration>) -> Option<Duration> {
        match self {
            Timeout::StoreDefault => store_default,
            Timeout::Forever => None,
            Timeout::After(d) => Some(*d),
            Timeout::Computed(f) => Some(f()),
        }
    }
}
