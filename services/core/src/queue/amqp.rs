//! The RabbitMQ backend (lapin).
//!
//! lapin does not reconnect reliably on its own, so this backend owns the
//! connection's life: every operation asks for a live connection, which is
//! re-established with backoff when the broker went away; consumers re-open
//! their channel, re-declare and resume; a publish that was never confirmed is
//! sent again until it is (so a message may arrive twice, never zero times).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::{mpsc, Mutex};

use super::{
    names, Consumer, Delivery, DeliverySource, Queue, QueueConfig, QueueError, Settle, Settlement,
};
use crate::retry::Backoff;

/// The exchange every queue dead-letters into, routed by `<queue>.dlq`.
const DEAD_LETTER_EXCHANGE: &str = "deepcuts.dlx";
/// Set on messages this backend dead-letters itself, to carry the reason.
const REASON_HEADER: &str = "x-deepcuts-reason";

/// A RabbitMQ connection that heals itself.
#[derive(Debug, Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: QueueConfig,
    live: Mutex<Option<Live>>,
    generation: AtomicU64,
}

/// One established connection and its publishing channel.
#[derive(Clone)]
struct Live {
    generation: u64,
    connection: Arc<Connection>,
    publisher: Channel,
    /// Queues whose topology was declared on this connection.
    declared: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.generation)
            .finish()
    }
}

fn broker_error(op: &'static str, queue: &str, err: impl std::fmt::Display) -> QueueError {
    QueueError::Broker {
        op,
        queue: queue.to_owned(),
        message: err.to_string(),
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl AmqpQueue {
    /// Connects once to fail fast on a wrong URL; later drops are healed.
    pub async fn connect(config: QueueConfig) -> Result<Self, QueueError> {
        let queue = Self {
            inner: Arc::new(Inner {
                config,
                live: Mutex::new(None),
                generation: AtomicU64::new(0),
            }),
        };
        queue.inner.live().await?;
        Ok(queue)
    }

    fn backoff(&self) -> Backoff {
        self.inner.backoff()
    }

    /// Publishes with headers, retrying across reconnects until confirmed or
    /// the publish timeout has passed.
    async fn publish_with_headers(
        &self,
        queue: &str,
        payload: &[u8],
        headers: FieldTable,
    ) -> Result<(), QueueError> {
        let timeout = Duration::from_millis(self.inner.config.publish_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            match self
                .inner
                .try_publish(queue, payload, headers.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(err @ QueueError::PublishRefused { .. }) => return Err(err),
                Err(err) => {
                    if Instant::now() >= deadline {
                        return Err(QueueError::PublishTimeout {
                            queue: queue.to_owned(),
                            timeout,
                            last_error: err.to_string(),
                        });
                    }
                    tracing::warn!(queue, attempt, error = %err, "publish not confirmed; retrying");
                    tokio::time::sleep(self.backoff().delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

impl Inner {
    fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(self.config.reconnect_max_backoff_ms.max(100)),
        )
    }

    /// The current connection, re-established if the broker dropped it.
    async fn live(&self) -> Result<Live, QueueError> {
        let mut guard = self.live.lock().await;
        if let Some(live) = guard.as_mut() {
            if live.connection.status().connected() {
                if !live.publisher.status().connected() {
                    live.publisher = open_publisher(&live.connection).await?;
                }
                return Ok(live.clone());
            }
            tracing::warn!(
                generation = live.generation,
                "broker connection lost; reconnecting"
            );
        }
        let connection = Connection::connect(&self.config.url, ConnectionProperties::default())
            .await
            .map_err(|err| QueueError::Unreachable {
                message: format!("{}: {err}", redact(&self.config.url)),
            })?;
        let publisher = open_publisher(&connection).await?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(generation, url = %redact(&self.config.url), "connected to broker");
        let live = Live {
            generation,
            connection: Arc::new(connection),
            publisher,
            declared: Arc::default(),
        };
        *guard = Some(live.clone());
        Ok(live)
    }

    /// Declares `queue`'s topology once per connection.
    async fn ensure_declared(
        &self,
        live: &Live,
        channel: &Channel,
        queue: &str,
    ) -> Result<(), QueueError> {
        if live.declared.lock().expect("declared lock").contains(queue) {
            return Ok(());
        }
        declare_topology(channel, queue, self.config.delivery_limit).await?;
        live.declared
            .lock()
            .expect("declared lock")
            .insert(queue.to_owned());
        Ok(())
    }

    async fn try_publish(
        &self,
        queue: &str,
        payload: &[u8],
        headers: FieldTable,
    ) -> Result<(), QueueError> {
        let live = self.live().await?;
        self.ensure_declared(&live, &live.publisher, queue).await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2) // persistent
            .with_headers(headers);
        let confirmation = live
            .publisher
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            )
            .await
            .map_err(|e| broker_error("publish", queue, e))?
            .await
            .map_err(|e| broker_error("publish confirm", queue, e))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(QueueError::PublishRefused {
                queue: queue.to_owned(),
                message: "unroutable: the queue does not exist".to_owned(),
            }),
            Confirmation::Nack(_) => {
                Err(broker_error("publish", queue, "broker nacked the message"))
            }
            Confirmation::NotRequested => {
                Err(broker_error("publish", queue, "publisher confirms are off"))
            }
        }
    }

    /// Opens a consuming channel on the live connection.
    async fn open_consumer(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<(Channel, lapin::Consumer), QueueError> {
        let live = self.live().await?;
        let channel = live
            .connection
            .create_channel()
            .await
            .map_err(|e| broker_error("open channel", queue, e))?;
        // A fresh channel: declare here, so a failed declare cannot close the publisher.
        declare_topology(&channel, queue, self.config.delivery_limit).await?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| broker_error("qos", queue, e))?;
        let tag = format!("deepcuts-{}", uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                ShortString::from(queue),
                ShortString::from(tag.as_str()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| broker_error("consume", queue, e))?;
        Ok((channel, consumer))
    }
}

async fn open_publisher(connection: &Connection) -> Result<Channel, QueueError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| broker_error("open channel", "-", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| broker_error("confirm select", "-", e))?;
    Ok(channel)
}

/// Declares the dead-letter exchange, `<base>.dlq` bound to it, and `<base>`
/// as a durable quorum queue that dead-letters there past the delivery limit.
/// Declaring either queue declares both, so a DLQ is never left unbound.
async fn declare_topology(
    channel: &Channel,
    queue: &str,
    delivery_limit: u32,
) -> Result<(), QueueError> {
    let base = queue.strip_suffix(".dlq").unwrap_or(queue);
    let dead_letter = names::dead_letter(base);
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .exchange_declare(
            ShortString::from(DEAD_LETTER_EXCHANGE),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker_error("declare exchange", queue, e))?;
    let mut dlq_args = FieldTable::default();
    dlq_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(ShortString::from(dead_letter.as_str()), durable, dlq_args)
        .await
        .map_err(|e| broker_error("declare queue", &dead_letter, e))?;
    channel
        .queue_bind(
            ShortString::from(dead_letter.as_str()),
            ShortString::from(DEAD_LETTER_EXCHANGE),
            ShortString::from(dead_letter.as_str()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker_error("bind queue", &dead_letter, e))?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(i32::try_from(delivery_limit).unwrap_or(i32::MAX)),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead_letter.as_str().into()),
    );
    channel
        .queue_declare(ShortString::from(base), durable, args)
        .await
        .map_err(|e| broker_error("declare queue", base, e))?;
    Ok(())
}

fn header_int(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Reads the delivery count and dead-letter reason RabbitMQ put in the headers.
fn delivery_facts(delivery: &lapin::message::Delivery) -> (u32, Option<String>) {
    let headers = delivery.properties.headers().as_ref();
    let get = |name: &str| headers.and_then(|h| h.inner().get(name));
    let previous = get("x-delivery-count").and_then(header_int);
    let count = match previous {
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX - 1) + 1,
        None if delivery.redelivered => 2,
        None => 1,
    };
    let reason = get(REASON_HEADER)
        .and_then(header_text)
        .or_else(|| get("x-first-death-reason").and_then(header_text));
    (count, reason)
}

#[async_trait]
impl Queue for AmqpQueue {
    async fn publish(&self, queue: &str, payload: Bytes) -> Result<(), QueueError> {
        self.publish_with_headers(queue, &payload, FieldTable::default())
            .await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, QueueError> {
        // Fail fast when the queue cannot be consumed at all; later drops heal.
        let first = self.inner.open_consumer(queue, prefetch).await?;
        let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
        tokio::spawn(consume_forever(
            self.clone(),
            queue.to_owned(),
            prefetch,
            first,
            tx,
        ));
        Ok(Consumer::new(Box::new(AmqpConsumer { rx })))
    }

    async fn check(&self) -> Result<(), QueueError> {
        self.inner.live().await.map(|_| ())
    }

    fn url(&self) -> String {
        redact(&self.inner.config.url)
    }
}

/// Forwards deliveries until the `Consumer` is dropped, re-opening the
/// channel whenever the broker goes away.
async fn consume_forever(
    queue_backend: AmqpQueue,
    queue: String,
    prefetch: u16,
    first: (Channel, lapin::Consumer),
    tx: mpsc::Sender<Delivery>,
) {
    let mut current = Some(first);
    let mut attempt = 0u32;
    loop {
        let (channel, mut stream) = match current.take() {
            Some(open) => open,
            None => match queue_backend.inner.open_consumer(&queue, prefetch).await {
                Ok(open) => {
                    tracing::info!(queue = %queue, "consumer resumed");
                    open
                }
                Err(err) => {
                    tracing::warn!(queue = %queue, attempt, error = %err, "consumer cannot reconnect yet");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(queue_backend.backoff().delay(attempt)) => {}
                    }
                    attempt += 1;
                    continue;
                }
            },
        };
        attempt = 0;
        loop {
            tokio::select! {
                _ = tx.closed() => {
                    // Unsettled deliveries on this channel return to the queue.
                    let _ = channel.close(200, ShortString::from("consumer dropped")).await;
                    return;
                }
                item = stream.next() => match item {
                    Some(Ok(delivery)) => {
                        let (count, reason) = delivery_facts(&delivery);
                        let settle = AmqpSettle {
                            backend: queue_backend.clone(),
                            queue: queue.clone(),
                            payload: Bytes::from(delivery.data.clone()),
                            acker: Some(delivery.acker),
                        };
                        let delivery = Delivery::new(Bytes::from(delivery.data), count, reason, Box::new(settle));
                        if tx.send(delivery).await.is_err() {
                            let _ = channel.close(200, ShortString::from("consumer dropped")).await;
                            return;
                        }
                    }
                    Some(Err(err)) => {
                        tracing::warn!(queue = %queue, error = %err, "consumer channel failed");
                        break;
                    }
                    None => {
                        tracing::warn!(queue = %queue, "consumer cancelled by the broker");
                        break;
                    }
                }
            }
        }
    }
}

struct AmqpConsumer {
    rx: mpsc::Receiver<Delivery>,
}

#[async_trait]
impl DeliverySource for AmqpConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

struct AmqpSettle {
    backend: AmqpQueue,
    queue: String,
    payload: Bytes,
    /// `None` once settled.
    acker: Option<lapin::Acker>,
}

#[async_trait]
impl Settle for AmqpSettle {
    async fn settle(mut self: Box<Self>, how: Settlement) -> Result<(), QueueError> {
        let acker = self.acker.take().expect("settled once");
        let settle_err = |e: lapin::Error| QueueError::Settle {
            message: e.to_string(),
        };
        match how {
            Settlement::Ack => acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(settle_err)?,
            Settlement::Requeue => acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
                .map_err(settle_err)?,
            Settlement::DeadLetter(reason) => {
                // RabbitMQ's own dead-lettering cannot carry a reason text, so
                // publish to the DLQ ourselves, then ack; if that publish
                // fails, return the message rather than lose it.
                let mut headers = FieldTable::default();
                headers.insert(
                    REASON_HEADER.into(),
                    AMQPValue::LongString(reason.as_str().into()),
                );
                headers.insert(
                    "x-deepcuts-source-queue".into(),
                    AMQPValue::LongString(self.queue.as_str().into()),
                );
                let dead_letter = names::dead_letter(&self.queue);
                match self
                    .backend
                    .publish_with_headers(&dead_letter, &self.payload, headers)
                    .await
                {
                    Ok(()) => acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(settle_err)?,
                    Err(err) => {
                        let _ = acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..BasicNackOptions::default()
                            })
                            .await;
                        return Err(err);
                    }
                }
            }
        };
        Ok(())
    }
}

impl Drop for AmqpSettle {
    /// A delivery dropped unsettled goes back to the queue now, instead of
    /// holding a prefetch slot until its channel closes.
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await;
                });
            }
        }
    }
}
