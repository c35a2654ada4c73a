//! Many workers against one: runs `workers` index workers on a shared queue
//! until every block of a job is done. The queue backend is a parameter, so
//! the same check runs on the in-process queue (tests) and on RabbitMQ
//! (integration scripts).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deepcuts_core::proto::{IndexBlockTask, Outcome, StageEvent};
use deepcuts_core::queue::{names, QueueError, QueueHandle};
use deepcuts_core::storage::Store;
use deepcuts_core::worker::{run_worker, WorkerConfig, WorkerContext};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::worker::{unit_id, IndexWorker, IndexerSettings};

#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("block {unit_id} failed: {error}")]
    BlockFailed { unit_id: String, error: String },
    #[error("{done} of {expected} blocks done after {waited:?}")]
    Timeout {
        done: usize,
        expected: usize,
        waited: Duration,
    },
    #[error("the event queue closed")]
    EventsClosed,
}

/// One job's block tasks.
#[derive(Debug, Clone)]
pub struct JobBlocks {
    pub job_id: String,
    pub model_id: String,
    pub block_count: u32,
    pub k: u32,
}

/// Publishes one task per block.
pub async fn publish_blocks(queue: &QueueHandle, job: &JobBlocks) -> Result<(), QueueError> {
    for block in 0..job.block_count {
        let task = IndexBlockTask {
            job_id: job.job_id.clone(),
            model_id: job.model_id.clone(),
            block,
            block_count: job.block_count,
            k: job.k,
        };
        queue
            .publish(names::INDEX, Bytes::from(task.encode_to_vec()))
            .await?;
    }
    Ok(())
}

/// Runs `workers` workers (each with `settings`) until every block of `job`
/// reports done on the event queue, then drains them.
pub async fn run_workers_until_done(
    queue: QueueHandle,
    store: Store,
    job: &JobBlocks,
    workers: usize,
    settings: IndexerSettings,
    timeout: Duration,
) -> Result<(), ParityError> {
    let mut events = queue.consume(names::EVENTS, 64).await?;
    let shutdown = CancellationToken::new();
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let handler = Arc::new(IndexWorker::new(store.clone(), settings.clone()));
        let ctx = WorkerContext {
            queue: queue.clone(),
            store: store.clone(),
            config: WorkerConfig::default(),
            delivery_limit: 5,
            shutdown: shutdown.clone(),
        };
        running.spawn(run_worker(handler, ctx));
    }
    let expected: BTreeSet<String> = (0..job.block_count)
        .map(|b| unit_id(&job.model_id, b))
        .collect();
    let mut done = BTreeSet::new();
    let waiting = async {
        while done.len() < expected.len() {
            let delivery = events.next().await.ok_or(ParityError::EventsClosed)?;
            let event = StageEvent::decode(delivery.payload.clone()).ok();
            delivery.ack().await?;
            let Some(event) = event else { continue };
            if event.job_id != job.job_id || !expected.contains(&event.unit_id) {
                continue;
            }
            if event.outcome == Outcome::Failed as i32 {
                return Err(ParityError::BlockFailed {
                    unit_id: event.unit_id,
                    error: event.error,
                });
            }
            if event.outcome == Outcome::Done as i32 {
                done.insert(event.unit_id);
            }
        }
        Ok(())
    };
    let result = match tokio::time::timeout(timeout, waiting).await {
        Ok(result) => result,
        Err(_) => Err(ParityError::Timeout {
            done: done.len(),
            expected: expected.len(),
            waited: timeout,
        }),
    };
    shutdown.cancel();
    while running.join_next().await.is_some() {}
    result
}
