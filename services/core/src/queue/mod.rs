//! Work queues: one small trait with two backends.
//!
//! - `amqp://...` ([`AmqpQueue`]): RabbitMQ. Durable quorum queues with an
//!   explicit delivery limit and a dead-letter queue each; publishes are
//!   persistent and confirmed; the backend reconnects on its own.
//! - `memory://` ([`InProcessQueue`]): the embedded default, with the same
//!   semantics: unacked messages come back, and a message returned more often
//!   than the delivery limit goes to `<queue>.dlq` with its reason.
//!
//! Delivery is at least once on both: every consumer must be idempotent.

mod amqp;
mod memory;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use amqp::AmqpQueue;
pub use memory::InProcessQueue;

/// The queues of the pipeline, one per stage, plus the coordinator's events.
pub mod names {
    pub const CRAWL: &str = "deepcuts.crawl";
    pub const TRANSCODE: &str = "deepcuts.transcode";
    pub const TRAIN: &str = "deepcuts.train";
    pub const EMBED: &str = "deepcuts.embed";
    pub const INDEX: &str = "deepcuts.index";
    pub const EVENTS: &str = "deepcuts.events";

    /// The queue that collects what `queue` gives up on.
    pub fn dead_letter(queue: &str) -> String {
        format!("{queue}.dlq")
    }
}

/// Why a message was dead-lettered after too many deliveries (RabbitMQ's own word).
pub const REASON_DELIVERY_LIMIT: &str = "delivery_limit";

/// Shared handle to a queue backend.
pub type QueueHandle = Arc<dyn Queue>;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("broker unreachable: {message}")]
    Unreachable { message: String },
    #[error("publish to {queue} not confirmed within {timeout:?}: {last_error}")]
    PublishTimeout {
        queue: String,
        timeout: Duration,
        last_error: String,
    },
    #[error("broker refused the publish to {queue}: {message}")]
    PublishRefused { queue: String, message: String },
    #[error("{op} on {queue} failed: {message}")]
    Broker {
        op: &'static str,
        queue: String,
        message: String,
    },
    #[error("delivery already settled or its channel is gone: {message}")]
    Settle { message: String },
}

/// The verbs every backend offers.
#[async_trait]
pub trait Queue: Send + Sync + fmt::Debug {
    /// Publishes a persistent message; returns once the broker has confirmed it.
    async fn publish(&self, queue: &str, payload: Bytes) -> Result<(), QueueError>;
    /// Starts consuming with manual acknowledgement and at most `prefetch`
    /// unsettled deliveries at a time.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, QueueError>;
    /// Readiness: the broker can be reached.
    async fn check(&self) -> Result<(), QueueError>;
    fn url(&self) -> String;
}

/// How a delivery is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settlement {
    Ack,
    Requeue,
    DeadLetter(String),
}

/// Backend-specific way to finish one delivery. Dropping it unsettled must
/// return the message to the queue, as a closed channel does in RabbitMQ.
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    async fn settle(self: Box<Self>, how: Settlement) -> Result<(), QueueError>;
}

/// One message handed to a consumer. Settle it exactly once.
pub struct Delivery {
    pub payload: Bytes,
    /// 1 on the first delivery, 2 on the first redelivery, ...
    pub delivery_count: u32,
    /// For messages read from a dead-letter queue: why they were put there.
    pub dead_letter_reason: Option<String>,
    settle: Option<Box<dyn Settle>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("payload_len", &self.payload.len())
            .field("delivery_count", &self.delivery_count)
            .field("dead_letter_reason", &self.dead_letter_reason)
            .finish()
    }
}

impl Delivery {
    pub(crate) fn new(
        payload: Bytes,
        delivery_count: u32,
        dead_letter_reason: Option<String>,
        settle: Box<dyn Settle>,
    ) -> Self {
        Self {
            payload,
            delivery_count,
            dead_letter_reason,
            settle: Some(settle),
        }
    }

    async fn finish(mut self, how: Settlement) -> Result<(), QueueError> {
        let settle = self.settle.take().ok_or_else(|| QueueError::Settle {
            message: "delivery was already settled".to_owned(),
        })?;
        settle.settle(how).await
    }

    /// The work is done: remove the message.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.finish(Settlement::Ack).await
    }

    /// The work could not be done now: deliver the message again later. Each
    /// return counts towards the queue's delivery limit.
    pub async fn requeue(self) -> Result<(), QueueError> {
        self.finish(Settlement::Requeue).await
    }

    /// The message can never be processed: move it to `<queue>.dlq` with `reason`.
    pub async fn reject(self, reason: &str) -> Result<(), QueueError> {
        self.finish(Settlement::DeadLetter(reason.to_owned())).await
    }
}

/// A stream of deliveries from one queue.
pub struct Consumer {
    source: Box<dyn DeliverySource>,
}

#[async_trait]
pub(crate) trait DeliverySource: Send {
    async fn next(&mut self) -> Option<Delivery>;
}

impl Consumer {
    pub(crate) fn new(source: Box<dyn DeliverySource>) -> Self {
        Self { source }
    }

    /// The next delivery; waits while the queue is empty or `prefetch`
    /// deliveries are unsettled. `None` once the backend is shut down.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.source.next().await
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Consumer")
    }
}

/// Which queue backend to open and how it behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `memory://` for the in-process queue, or `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// Deliveries a message may be returned before it is dead-lettered.
    pub delivery_limit: u32,
    /// How long a publish keeps retrying (across reconnects) before it fails.
    pub publish_timeout_ms: u64,
    /// Upper bound of the backoff between reconnect attempts.
    pub reconnect_max_backoff_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            url: "memory://".to_owned(),
            delivery_limit: 5,
            publish_timeout_ms: 120_000,
            reconnect_max_backoff_ms: 5_000,
        }
    }
}

/// Opens the queue backend `config.url` names.
pub async fn open_queue(config: &QueueConfig) -> Result<QueueHandle, QueueError> {
    let url = config.url.trim();
    if url == "memory" || url.starts_with("memory://") {
        return Ok(Arc::new(InProcessQueue::new(config.delivery_limit)));
    }
    if url.starts_with("amqp://") || url.starts_with("amqps://") {
        return Ok(Arc::new(AmqpQueue::connect(config.clone()).await?));
    }
    Err(QueueError::InvalidUrl {
        url: url.to_owned(),
        reason: "supported schemes are memory:// and amqp://".to_owned(),
    })
}
