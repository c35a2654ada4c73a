//! The in-process queue for the embedded mode, with RabbitMQ's semantics.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{
    names, Consumer, Delivery, DeliverySource, Queue, QueueError, Settle, Settlement,
    REASON_DELIVERY_LIMIT,
};

#[derive(Debug, Clone)]
struct Message {
    payload: Bytes,
    /// Times the message was handed out and came back.
    returns: u32,
    dead_letter_reason: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    queues: Mutex<HashMap<String, VecDeque<Message>>>,
    /// Woken on every publish or return; consumers re-check their queue.
    wake: Notify,
}

/// Queues held in memory; clones share the same queues.
#[derive(Debug, Clone)]
pub struct InProcessQueue {
    shared: Arc<Shared>,
    delivery_limit: u32,
}

impl InProcessQueue {
    pub fn new(delivery_limit: u32) -> Self {
        Self {
            shared: Arc::new(Shared::default()),
            delivery_limit,
        }
    }

    /// Messages waiting (not handed out) in `queue`, for tests and status pages.
    pub fn ready_len(&self, queue: &str) -> usize {
        self.shared
            .queues
            .lock()
            .expect("queue lock")
            .get(queue)
            .map_or(0, VecDeque::len)
    }

    fn push(&self, queue: &str, message: Message) {
        self.shared
            .queues
            .lock()
            .expect("queue lock")
            .entry(queue.to_owned())
            .or_default()
            .push_back(message);
        self.shared.wake.notify_waiters();
    }

    fn pop(&self, queue: &str) -> Option<Message> {
        self.shared
            .queues
            .lock()
            .expect("queue lock")
            .get_mut(queue)
            .and_then(VecDeque::pop_front)
    }

    /// A message comes back: requeue it, or dead-letter it past the limit.
    fn give_back(&self, queue: &str, mut message: Message) {
        message.returns += 1;
        if message.returns > self.delivery_limit {
            tracing::warn!(
                queue,
                returns = message.returns,
                "message dead-lettered after its delivery limit"
            );
            message.dead_letter_reason = Some(REASON_DELIVERY_LIMIT.to_owned());
            message.returns = 0;
            self.push(&names::dead_letter(queue), message);
        } else {
            self.push(queue, message);
        }
    }
}

#[async_trait]
impl Queue for InProcessQueue {
    async fn publish(&self, queue: &str, payload: Bytes) -> Result<(), QueueError> {
        self.push(
            queue,
            Message {
                payload,
                returns: 0,
                dead_letter_reason: None,
            },
        );
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, QueueError> {
        Ok(Consumer::new(Box::new(MemoryConsumer {
            backend: self.clone(),
            queue: queue.to_owned(),
            in_flight: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
        })))
    }

    async fn check(&self) -> Result<(), QueueError> {
        Ok(())
    }

    fn url(&self) -> String {
        "memory://".to_owned()
    }
}

struct MemoryConsumer {
    backend: InProcessQueue,
    queue: String,
    /// One permit per unsettled delivery: the prefetch limit.
    in_flight: Arc<Semaphore>,
}

#[async_trait]
impl DeliverySource for MemoryConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let permit = self.in_flight.clone().acquire_owned().await.ok()?;
        loop {
            // Register for wake-ups before looking, so a publish in between is not missed.
            let woken = self.backend.shared.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(message) = self.backend.pop(&self.queue) {
                let settle = MemorySettle {
                    backend: self.backend.clone(),
                    queue: self.queue.clone(),
                    message: Some(message.clone()),
                    _permit: permit,
                };
                return Some(Delivery::new(
                    message.payload,
                    message.returns + 1,
                    message.dead_letter_reason,
                    Box::new(settle),
                ));
            }
            woken.await;
        }
    }
}

struct MemorySettle {
    backend: InProcessQueue,
    queue: String,
    /// `None` once settled.
    message: Option<Message>,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Settle for MemorySettle {
    async fn settle(mut self: Box<Self>, how: Settlement) -> Result<(), QueueError> {
        let message = self.message.take().expect("settled once");
        match how {
            Settlement::Ack => {}
            Settlement::Requeue => self.backend.give_back(&self.queue, message),
            Settlement::DeadLetter(reason) => self.backend.push(
                &names::dead_letter(&self.queue),
                Message {
                    payload: message.payload,
                    returns: 0,
                    dead_letter_reason: Some(reason),
                },
            ),
        }
        Ok(())
    }
}

impl Drop for MemorySettle {
    /// A delivery dropped unsettled (its worker died) comes back, like a
    /// message on a closed RabbitMQ channel.
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            self.backend.give_back(&self.queue, message);
        }
    }
}
