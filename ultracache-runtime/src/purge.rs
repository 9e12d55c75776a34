//! Downstream purging: reverse proxies forget what the application forgot
//! (feature `purge`).
//!
//! Install purgers once ([`install`]). From then on:
//! - when an invalidation drops cached responses, each purger is told their
//!   URLs (path and query, with the request headers the response varied on),
//!   once each;
//! - every invalidation's dependencies are offered as surrogate keys
//!   (`blog.post:42`, `blog.post`) to purgers that purge by key (Varnish's
//!   xkey), matching the header [`CacheLayer::surrogate_keys`] puts on
//!   responses.
//!
//! Purges run after the drop, off the request path, on a thread of their own:
//! bounded concurrency, a timeout per attempt, retries with backoff. Failures
//! are logged and counted ([`stats`]), never surfaced to the writer.
//!
//! The VCL and nginx configuration the purgers expect ship in `proxy/`.
//!
//! [`CacheLayer::surrogate_keys`]: crate::http::CacheLayer::surrogate_keys

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, Semaphore};

use crate::dep::{Dep, Kind};

pub(crate) mod broadcast;

#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub use broadcast::RabbitBroadcast;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use broadcast::RedisBroadcast;
pub use broadcast::{Deliver, SubscribeFuture, Transport};

/// What a proxy is asked to forget.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PurgeRequest {
    /// One URL (path and query), as requested with these headers (the ones
    /// the cached response varied on).
    Url {
        /// Path and query, such as `/posts/hello?page=2`.
        path: String,
        /// Request headers, lower-case names.
        headers: Vec<(String, String)>,
    },
    /// Every page tagged with one of these surrogate keys.
    Keys(Vec<String>),
}

/// Why a purge failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeError(pub String);

impl fmt::Display for PurgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PurgeError {}

/// The future a purger returns.
pub type PurgeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PurgeError>> + Send + 'a>>;

/// Something outside the process that must forget too.
pub trait Purger: Send + Sync + 'static {
    /// Its name, in logs and statistics.
    fn name(&self) -> &str;

    /// Purges what `request` names.
    fn purge<'a>(&'a self, client: &'a HttpClient, request: &'a PurgeRequest) -> PurgeFuture<'a>;

    /// What this purger needs to be sent for `request`, or `None` when it
    /// has nothing to do with it (a URL purger and keys). Requests that turn
    /// out equal are sent once: a proxy that drops every variant of a URL
    /// needs one request per URL, not one per variant.
    fn relevant(&self, request: &PurgeRequest) -> Option<PurgeRequest> {
        Some(request.clone())
    }
}

/// The HTTP client purgers share.
pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Purging options; see [`install`].
#[derive(Clone)]
#[non_exhaustive]
pub struct PurgeOptions {
    /// Where purges are published so that every node purges its own
    /// proxies; `None`: this node's purgers only.
    pub broadcast: Option<Arc<dyn Transport>>,
    /// Purge requests in flight at once (default 8).
    pub concurrency: usize,
    /// Time one attempt may take (default 2 s).
    pub timeout: Duration,
    /// Attempts after the first at least (default 3), with backoff doubling
    /// from `backoff` up to 2 s.
    pub retries: u32,
    /// The first retry's delay (default 100 ms).
    pub backoff: Duration,
    /// How long a purge is held, retried, while its proxy does not answer
    /// (default 60 s): a proxy down for less than this gets every purge of
    /// the writes made meanwhile once it is back. Past it the purge is given
    /// up, counted in [`PurgeStats::failed`] and logged.
    pub hold: Duration,
}

impl PurgeOptions {
    /// Publishes every purge through `transport`: each node (this one too)
    /// receives it and purges its own proxies.
    pub fn broadcast(mut self, transport: Arc<dyn Transport>) -> Self {
        self.broadcast = Some(transport);
        self
    }

    /// Purge requests in flight at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Time one attempt may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attempts after the first, and the first retry's delay (doubling).
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// How long a purge is held and retried while its proxy (or the
    /// broadcast, for publishing it) does not answer.
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }
}

impl fmt::Debug for PurgeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PurgeOptions")
            .field(
                "broadcast",
                &self.broadcast.as_ref().map(|t| t.name().to_owned()),
            )
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("hold", &self.hold)
            .finish()
    }
}

impl Default for PurgeOptions {
    fn default() -> Self {
        PurgeOptions {
            broadcast: None,
            concurrency: 8,
            timeout: Duration::from_secs(2),
            retries: 3,
            backoff: Duration::from_millis(100),
            hold: Duration::from_secs(60),
        }
    }
}

/// Counts of purge requests (one per request and purger).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeStats {
    /// Requests handed to purgers.
    pub queued: u64,
    /// Requests a purger carried out.
    pub sent: u64,
    /// Requests given up: still failing after every retry and the hold.
    pub failed: u64,
    /// Requests being retried now (their proxy has not answered yet).
    pub waiting: u64,
    /// Attempts that were retried.
    pub retried: u64,
    /// Requests published to the other nodes.
    pub published: u64,
    /// Requests waiting to be published: the broadcast does not answer.
    pub unpublished_waiting: u64,
    /// Requests never published: the broadcast did not answer for the whole
    /// hold. Each is logged (warn) with what it would have purged.
    pub unpublished: u64,
    /// Requests received from the broadcast (this node's own included).
    pub received: u64,
}

#[derive(Default)]
pub(crate) struct Counts {
    queued: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    waiting: AtomicU64,
    retried: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) unpublished_waiting: AtomicU64,
    pub(crate) unpublished: AtomicU64,
    pub(crate) received: AtomicU64,
}

struct Pipeline {
    /// Requests made here: to the broadcast when there is one, else to the
    /// local purgers.
    tx: mpsc::UnboundedSender<PurgeRequest>,
    counts: Arc<Counts>,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

/// Installs the purgers for the life of the process. Fails if purgers were
/// installed already.
pub fn install(purgers: Vec<Arc<dyn Purger>>, options: PurgeOptions) -> Result<(), PurgeError> {
    let counts = Arc::new(Counts::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let pipeline = Pipeline {
        tx,
        counts: Arc::clone(&counts),
    };
    PIPELINE
        .set(pipeline)
        .map_err(|_| PurgeError("purgers are installed once".into()))?;
    std::thread::Builder::new()
        .name("ultracache-purge".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("ultracache: cannot start the purge runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match options.broadcast.clone() {
                    None => run(purgers, options, rx, counts).await,
                    Some(transport) => {
                        let (local_tx, local_rx) = mpsc::unbounded_channel();
                        tokio::spawn(broadcast::publish(
                            Arc::clone(&transport),
                            rx,
                            Arc::clone(&counts),
                            options.hold,
                        ));
                        tokio::spawn(broadcast::receive(transport, local_tx, Arc::clone(&counts)));
                        run(purgers, options, local_rx, counts).await;
                    }
                }
            });
        })
        .map_err(|e| PurgeError(format!("cannot start the purge thread: {e}")))?;
    crate::listen::listen(Arc::new(SurrogateKeys));
    Ok(())
}

/// Purges the surrogate keys of what a write invalidates.
struct SurrogateKeys;

impl crate::listen::Listener for SurrogateKeys {
    fn invalidating(&self, deps: &[Dep], kinds: &[Kind]) {
        let keys: Vec<String> = deps
            .iter()
            .map(ToString::to_string)
            .chain(kinds.iter().map(|k| format!("{}:*", k.name())))
            .collect();
        if !keys.is_empty() {
            enqueue(PurgeRequest::Keys(keys));
        }
    }
}

/// Counts of purge requests so far.
pub fn stats() -> PurgeStats {
    PIPELINE
        .get()
        .map_or_else(PurgeStats::default, |p| PurgeStats {
            queued: p.counts.queued.load(SeqCst),
            sent: p.counts.sent.load(SeqCst),
            failed: p.counts.failed.load(SeqCst),
            retried: p.counts.retried.load(SeqCst),
            waiting: p.counts.waiting.load(SeqCst),
            published: p.counts.published.load(SeqCst),
            unpublished_waiting: p.counts.unpublished_waiting.load(SeqCst),
            unpublished: p.counts.unpublished.load(SeqCst),
            received: p.counts.received.load(SeqCst),
        })
}

/// Hands a request to the purgers (nothing happens when none are installed).
pub fn enqueue(request: PurgeRequest) {
    if let Some(p) = PIPELINE.get() {
        let _ = p.tx.send(request);
    }
}

async fn run(
    purgers: Vec<Arc<dyn Purger>>,
    options: PurgeOptions,
    mut rx: mpsc::UnboundedReceiver<PurgeRequest>,
    counts: Arc<Counts>,
) {
    let client: Arc<HttpClient> = Arc::new(Client::builder(TokioExecutor::new()).build_http());
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    while let Some(first) = rx.recv().await {
        // What arrived together is purged once.
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for purger in &purgers {
            let mut seen = HashSet::new();
            let requests: Vec<PurgeRequest> = batch
                .iter()
                .filter_map(|r| purger.relevant(r))
                .filter(|r| seen.insert(r.clone()))
                .collect();
            for request in requests {
                counts.queued.fetch_add(1, SeqCst);
                let (purger, client, permits, counts, options, request) = (
                    Arc::clone(purger),
                    Arc::clone(&client),
                    Arc::clone(&permits),
                    Arc::clone(&counts),
                    options.clone(),
                    request.clone(),
                );
                tokio::spawn(async move {
                    let started = tokio::time::Instant::now();
                    let mut delay = options.backoff;
                    let mut attempt = 0;
                    loop {
                        // A permit per attempt: a purge waiting for its proxy
                        // does not hold back the others.
                        let result = {
                            let Ok(_permit) = permits.acquire().await else {
                                return;
                            };
                            tokio::time::timeout(options.timeout, purger.purge(&client, &request))
                                .await
                        };
                        let error = match result {
                            Ok(Ok(())) => {
                                counts.sent.fetch_add(1, SeqCst);
                                if attempt > 0 {
                                    counts.waiting.fetch_sub(1, SeqCst);
                                }
                                return;
                            }
                            Ok(Err(e)) => e.0,
                            Err(_) => "timed out".into(),
                        };
                        let held = started.elapsed() + delay;
                        if attempt >= options.retries && held > options.hold {
                            counts.failed.fetch_add(1, SeqCst);
                            if attempt > 0 {
                                counts.waiting.fetch_sub(1, SeqCst);
                            }
                            tracing::warn!(
                                purger = purger.name(),
                                "ultracache: purge of {request:?} given up after {:?}: {error}",
                                started.elapsed()
                            );
                            return;
                        }
                        if attempt == 0 {
                            counts.waiting.fetch_add(1, SeqCst);
                        }
                        counts.retried.fetch_add(1, SeqCst);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_BACKOFF.max(options.backoff));
                        attempt += 1;
                    }
                });
            }
        }
    }
}

/// The longest wait between two attempts of a purge.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

async fn send(
    client: &HttpClient,
    method: &Method,
    url: String,
    headers: &[(String, String)],
) -> Result<u16, PurgeError> {
    let mut request = Request::builder().method(method.clone()).uri(&url);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| PurgeError(format!("bad purge request for {url}: {e}")))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| PurgeError(format!("{url}: {e}")))?;
    Ok(response.status().as_u16())
}

fn purge_method() -> Method {
    Method::from_bytes(b"PURGE").unwrap_or(Method::DELETE)
}

/// How a [`VarnishPurger`] purges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarnishMode {
    /// `PURGE /path` for each dropped URL (Varnish drops every variant of it).
    Url,
    /// `PURGE /` with `xkey-purge: key1 key2…` for each invalidation: one
    /// request clears every page that showed the objects (vmod xkey).
    Xkey,
}

/// Purges a Varnish in front of this node, with `proxy/varnish/ultracache.vcl`.
#[derive(Debug, Clone)]
pub struct VarnishPurger {
    base: String,
    mode: VarnishMode,
}

impl VarnishPurger {
    /// A purger for the Varnish at `base` (`http://127.0.0.1:6081`).
    pub fn new(base: impl Into<String>, mode: VarnishMode) -> Self {
        VarnishPurger {
            base: base.into().trim_end_matches('/').to_owned(),
            mode,
        }
    }
}

impl Purger for VarnishPurger {
    fn name(&self) -> &str {
        "varnish"
    }

    fn relevant(&self, request: &PurgeRequest) -> Option<PurgeRequest> {
        match (self.mode, request) {
            // `return (purge)` drops every variant of the URL at once, under
            // the host it was cached for (the VCL's hash holds the host).
            (VarnishMode::Url, PurgeRequest::Url { path, headers }) => Some(PurgeRequest::Url {
                path: path.clone(),
                headers: headers
                    .iter()
                    .filter(|(n, _)| n == "host")
                    .cloned()
                    .collect(),
            }),
            (VarnishMode::Xkey, PurgeRequest::Keys(_)) => Some(request.clone()),
            _ => None,
        }
    }

    fn purge<'a>(&'a self, client: &'a HttpClient, request: &'a PurgeRequest) -> PurgeFuture<'a> {
        Box::pin(async move {
            let status = match (self.mode, request) {
                (VarnishMode::Url, PurgeRequest::Url { path, headers }) => {
                    send(
                        client,
                        &purge_method(),
                        format!("{}{path}", self.base),
                        headers,
                    )
                    .await?
                }
                (VarnishMode::Xkey, PurgeRequest::Keys(keys)) => {
                    let header = vec![("xkey-purge".to_owned(), keys.join(" "))];
                    send(client, &purge_method(), format!("{}/", self.base), &header).await?
                }
                _ => return Ok(()),
            };
            match status {
                200..=299 | 404 => Ok(()),
                other => Err(PurgeError(format!("varnish answered {other}"))),
            }
        })
    }
}

/// Purges an nginx `proxy_cache` in front of this node, with the
/// cache-purge module and `proxy/nginx/ultracache.conf`: `GET
/// /_purge/<path>?<query>` for each dropped URL.
#[derive(Debug, Clone)]
pub struct NginxPurger {
    base: String,
}

impl NginxPurger {
    /// A purger for the nginx at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Self {
        NginxPurger {
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }
}

impl Purger for NginxPurger {
    fn name(&self) -> &str {
        "nginx"
    }

    fn relevant(&self, request: &PurgeRequest) -> Option<PurgeRequest> {
        // The shipped configuration's cache key has no host: the purge goes
        // to nginx's own address, with the headers the page varied on.
        match request {
            PurgeRequest::Url { path, headers } => Some(PurgeRequest::Url {
                path: path.clone(),
                headers: headers
                    .iter()
                    .filter(|(n, _)| n != "host")
                    .cloned()
                    .collect(),
            }),
            PurgeRequest::Keys(_) => None,
        }
    }

    fn purge<'a>(&'a self, client: &'a HttpClient, request: &'a PurgeRequest) -> PurgeFuture<'a> {
        Box::pin(async move {
            let PurgeRequest::Url { path, headers } = request else {
                return Ok(());
            };
            let url = format!("{}/_purge{path}", self.base);
            let status = send(client, &Method::GET, url, headers).await?;
            match status {
                // 404: nothing cached under that key.
                200..=299 | 404 => Ok(()),
                other => Err(PurgeError(format!("nginx answered {other}"))),
            }
        })
    }
}
