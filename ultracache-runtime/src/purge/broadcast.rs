//! Broadcast: purges published to every app node, each of which purges the
//! proxies in front of it. Over Redis pub/sub (at most once: a node that is
//! disconnected misses what was published meanwhile) or over a RabbitMQ
//! fanout exchange (at least once with a durable queue per node: what a node
//! missed waits for it).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Counts, PurgeError, PurgeFuture, PurgeRequest};

/// Delivers a received message to this node's purgers.
pub type Deliver = Box<dyn Fn(String) + Send + Sync>;

/// The future [`Transport::subscribe`] returns: it runs until the connection
/// ends.
pub type SubscribeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PurgeError>> + Send + 'a>>;

/// How purges reach every node.
pub trait Transport: Send + Sync + 'static {
    /// Its name, in logs.
    fn name(&self) -> &str;
    /// Publishes one message to every node.
    fn publish<'a>(&'a self, message: &'a str) -> PurgeFuture<'a>;
    /// Receives every node's messages (this node's own too) until the
    /// connection ends; it is called again after a break.
    fn subscribe(&self, deliver: Deliver) -> SubscribeFuture<'_>;
}

/// `u <path>` then `<header>\t<value>` lines, or `k <key> <key>…`.
pub(crate) fn encode(request: &PurgeRequest) -> String {
    match request {
        PurgeRequest::Url { path, headers } => {
            let mut m = format!("u {path}");
            for (name, value) in headers {
                m.push('\n');
                m.push_str(name);
                m.push('\t');
                m.push_str(value);
            }
            m
        }
        PurgeRequest::Keys(keys) => format!("k {}", keys.join(" ")),
    }
}

pub(crate) fn decode(message: &str) -> Option<PurgeRequest> {
    let mut lines = message.lines();
    let first = lines.next()?;
    if let Some(path) = first.strip_prefix("u ") {
        let headers = lines
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        return Some(PurgeRequest::Url {
            path: path.to_owned(),
            headers,
        });
    }
    let keys = first.strip_prefix("k ")?;
    Some(PurgeRequest::Keys(
        keys.split(' ')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

/// Publishes what this node asks to purge, in order. While the transport
/// does not answer, the purge at the head is retried (backing off to every
/// 5 s) and the ones behind it wait; once it has failed for `hold`, it and
/// every purge waiting behind it are dropped, counted and logged with what
/// they would have purged, so an operator sees exactly which pages may stay
/// in the proxies.
pub(crate) async fn publish(
    transport: Arc<dyn Transport>,
    mut rx: mpsc::UnboundedReceiver<PurgeRequest>,
    counts: Arc<Counts>,
    hold: Duration,
) {
    while let Some(request) = rx.recv().await {
        let message = encode(&request);
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut waiting = false;
        loop {
            match transport.publish(&message).await {
                Ok(()) => {
                    counts.published.fetch_add(1, SeqCst);
                    break;
                }
                Err(e) if started.elapsed() >= hold => {
                    let mut dropped = vec![request.clone()];
                    while let Ok(next) = rx.try_recv() {
                        dropped.push(next);
                    }
                    counts.unpublished.fetch_add(dropped.len() as u64, SeqCst);
                    for request in &dropped {
                        tracing::warn!(
                            transport = transport.name(),
                            purge = ?request,
                            "ultracache: a purge was never published: the broadcast \
                             did not answer for {hold:?} ({e})"
                        );
                    }
                    break;
                }
                Err(_) => {
                    if !waiting {
                        waiting = true;
                        counts.unpublished_waiting.fetch_add(1, SeqCst);
                    }
                    tokio::time::sleep(delay.min(hold.saturating_sub(started.elapsed()))).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        if waiting {
            counts.unpublished_waiting.fetch_sub(1, SeqCst);
        }
    }
}

/// Feeds every node's purges to this node's purgers, resubscribing after a
/// break.
pub(crate) async fn receive(
    transport: Arc<dyn Transport>,
    local: mpsc::UnboundedSender<PurgeRequest>,
    counts: Arc<Counts>,
) {
    loop {
        let (local, counts) = (local.clone(), Arc::clone(&counts));
        let deliver: Deliver = Box::new(move |message| {
            if let Some(request) = decode(&message) {
                counts.received.fetch_add(1, SeqCst);
                let _ = local.send(request);
            }
        });
        if let Err(e) = transport.subscribe(deliver).await {
            tracing::warn!(
                transport = transport.name(),
                "ultracache: purge subscription broke: {e}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Purges broadcast over Redis pub/sub (at most once).
#[cfg(feature = "redis")]
#[derive(Debug)]
pub struct RedisBroadcast {
    client: redis::Client,
    channel: String,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

#[cfg(feature = "redis")]
impl RedisBroadcast {
    /// Publishes on `channel` of the Redis at `url`.
    pub fn new(url: &str, channel: impl Into<String>) -> Result<Self, PurgeError> {
        Ok(RedisBroadcast {
            client: redis::Client::open(url).map_err(|e| PurgeError(e.to_string()))?,
            channel: channel.into(),
            connection: tokio::sync::Mutex::new(None),
        })
    }
}

#[cfg(feature = "redis")]
impl Transport for RedisBroadcast {
    fn name(&self) -> &str {
        "redis"
    }

    fn publish<'a>(&'a self, message: &'a str) -> PurgeFuture<'a> {
        Box::pin(async move {
            use redis::AsyncCommands;
            let mut slot = self.connection.lock().await;
            let mut connection = match slot.clone() {
                Some(c) => c,
                None => {
                    let c = self
                        .client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| PurgeError(e.to_string()))?;
                    *slot = Some(c.clone());
                    c
                }
            };
            let result: redis::RedisResult<()> = connection.publish(&self.channel, message).await;
            if let Err(e) = result {
                *slot = None;
                return Err(PurgeError(e.to_string()));
            }
            Ok(())
        })
    }

    fn subscribe(&self, deliver: Deliver) -> SubscribeFuture<'_> {
        Box::pin(async move {
            use futures_util::StreamExt;
            let mut pubsub = self
                .client
                .get_async_pubsub()
                .await
                .map_err(|e| PurgeError(e.to_string()))?;
            pubsub
                .subscribe(&self.channel)
                .await
                .map_err(|e| PurgeError(e.to_string()))?;
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                if let Ok(payload) = msg.get_payload::<String>() {
                    deliver(payload);
                }
            }
            Err(PurgeError("the subscription ended".into()))
        })
    }
}

/// Purges broadcast over a RabbitMQ fanout exchange, as django-ultracache
/// does. Each node consumes from a durable queue of its own and acknowledges
/// a purge once it is handed to its purgers: what arrives while a node is
/// away waits for it (at least once).
#[cfg(feature = "rabbitmq")]
pub struct RabbitBroadcast {
    url: String,
    exchange: String,
    queue: String,
    durable: bool,
    channel: tokio::sync::Mutex<Option<lapin::Channel>>,
}

#[cfg(feature = "rabbitmq")]
impl std::fmt::Debug for RabbitBroadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBroadcast")
            .field("exchange", &self.exchange)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "rabbitmq")]
impl RabbitBroadcast {
    /// Publishes to the fanout `exchange` of the broker at `url`
    /// (`amqp://guest:guest@127.0.0.1:5672/%2f`); this node consumes from the
    /// durable queue `node` (one name per node, stable across restarts).
    pub fn new(
        url: impl Into<String>,
        exchange: impl Into<String>,
        node: impl Into<String>,
    ) -> Self {
        let exchange = exchange.into();
        RabbitBroadcast {
            url: url.into(),
            queue: format!("{exchange}.{}", node.into()),
            exchange,
            durable: true,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    /// The exchange and this node's queue go away when no node uses them
    /// (tests, short-lived nodes): nothing waits for a node that is away.
    pub fn transient(mut self) -> Self {
        self.durable = false;
        self
    }

    /// A channel with the exchange declared; with `consume`, this node's queue
    /// too, bound to it.
    async fn open(&self, consume: bool) -> Result<lapin::Channel, PurgeError> {
        use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let err = |e: lapin::Error| PurgeError(e.to_string());
        let connection =
            lapin::Connection::connect(&self.url, lapin::ConnectionProperties::default())
                .await
                .map_err(err)?;
        let channel = connection.create_channel().await.map_err(err)?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: self.durable,
                    auto_delete: !self.durable,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        if !consume {
            return Ok(channel);
        }
        channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: self.durable,
                    auto_delete: !self.durable,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        Ok(channel)
    }
}

#[cfg(feature = "rabbitmq")]
impl Transport for RabbitBroadcast {
    fn name(&self) -> &str {
        "rabbitmq"
    }

    fn publish<'a>(&'a self, message: &'a str) -> PurgeFuture<'a> {
        Box::pin(async move {
            use lapin::options::BasicPublishOptions;
            let mut slot = self.channel.lock().await;
            let channel = match slot.clone() {
                Some(c) if c.status().connected() => c,
                _ => {
                    let c = self.open(false).await?;
                    *slot = Some(c.clone());
                    c
                }
            };
            let confirm = channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    message.as_bytes(),
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await;
            if let Err(e) = confirm {
                *slot = None;
                return Err(PurgeError(e.to_string()));
            }
            Ok(())
        })
    }

    fn subscribe(&self, deliver: Deliver) -> SubscribeFuture<'_> {
        Box::pin(async move {
            use futures_util::StreamExt;
            use lapin::options::{BasicAckOptions, BasicConsumeOptions};
            let err = |e: lapin::Error| PurgeError(e.to_string());
            let channel = self.open(true).await?;
            let mut consumer = channel
                .basic_consume(
                    self.queue.as_str().into(),
                    "ultracache".into(),
                    BasicConsumeOptions::default(),
                    lapin::types::FieldTable::default(),
                )
                .await
                .map_err(err)?;
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery.map_err(err)?;
                deliver(String::from_utf8_lossy(&delivery.data).into_owned());
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(err)?;
            }
            Err(PurgeError("the consumer ended".into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let url = PurgeRequest::Url {
            path: "/posts/1?page=2".into(),
            headers: vec![("accept-language".into(), "fr".into())],
        };
        assert_eq!(decode(&encode(&url)), Some(url));
        let keys = PurgeRequest::Keys(vec!["blog.post:1".into(), "blog.post".into()]);
        assert_eq!(decode(&encode(&keys)), Some(keys));
        assert_eq!(decode("nonsense"), None);
    }
}
