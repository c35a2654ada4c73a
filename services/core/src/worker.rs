//! The consume loop every worker plugs its handler into.
//!
//! For each delivery it decodes the task, runs the handler inside a span that
//! carries `job_id` and the unit id, and settles the delivery by the result:
//! - `Ok` → a `Done` stage event, then ack;
//! - [`TaskError::Transient`] → requeue (the broker's delivery limit bounds
//!   the retries; the last allowed attempt is recorded as a failure instead);
//! - [`TaskError::Permanent`] → a failure record and a `Failed` event, then
//!   the message goes to the dead-letter queue with its reason;
//! - an undecodable message → the dead-letter queue at once.
//!
//! Events are published before the ack, so a crash in between repeats the
//! event, never loses it; the coordinator counts units idempotently.
//! On shutdown the loop stops taking work, lets in-flight units finish for up
//! to the drain timeout, and returns the rest to the queue.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::failures::{write_failure, FailureRecord};
use crate::metrics::{metrics, record_unit, StageLabels};
use crate::proto::{Outcome, Stage, StageEvent};
use crate::queue::{names, Delivery, QueueError, QueueHandle};
use crate::storage::Store;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Units processed at once by this process.
    pub concurrency: usize,
    /// Unsettled deliveries the broker may hand this process.
    pub prefetch: u16,
    /// How long in-flight units may run on after a shutdown signal.
    pub drain_timeout_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            prefetch: 2,
            drain_timeout_ms: 30_000,
        }
    }
}

/// How a unit failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TaskError {
    /// Worth retrying: a timeout, an unreachable server, a 503.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: bad input, a 404, a malformed page.
    #[error("{kind}: {reason}")]
    Permanent { kind: String, reason: String },
}

impl TaskError {
    pub fn permanent(kind: impl Into<String>, reason: impl Into<String>) -> Self {
        TaskError::Permanent {
            kind: kind.into(),
            reason: reason.into(),
        }
    }
}

/// What a finished unit reports to the coordinator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitReport {
    /// Units this unit issued (e.g. the next crawl page).
    pub spawned_units: Vec<String>,
    /// Stage-specific figures as JSON.
    pub detail_json: String,
}

/// Identity of one unit of work, for logs, events and failure records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitRef {
    pub job_id: String,
    pub unit_id: String,
}

/// A worker's stage logic.
pub trait TaskHandler: Send + Sync + 'static {
    type Task: Message + Default + Send + 'static;
    const STAGE: Stage;
    /// The queue this handler consumes.
    fn queue(&self) -> &str;
    fn unit(task: &Self::Task) -> UnitRef;
    fn handle(
        &self,
        task: Self::Task,
    ) -> impl Future<Output = Result<UnitReport, TaskError>> + Send;
}

/// Everything the loop needs besides the handler.
#[derive(Clone, Debug)]
pub struct WorkerContext {
    pub queue: QueueHandle,
    pub store: Store,
    pub config: WorkerConfig,
    /// The queue's delivery limit, so the last attempt is recorded as a failure.
    pub delivery_limit: u32,
    pub shutdown: CancellationToken,
}

/// Counts of what one run of the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub done: u64,
    pub failed: u64,
    pub requeued: u64,
}

enum Settled {
    Done,
    Failed,
    Requeued,
}

/// Publishes one stage event to the coordinator's queue.
pub async fn publish_event(
    queue: &QueueHandle,
    unit: &UnitRef,
    stage: Stage,
    outcome: Outcome,
    error: &str,
    report: &UnitReport,
) -> Result<(), QueueError> {
    let event = StageEvent {
        job_id: unit.job_id.clone(),
        stage: stage as i32,
        unit_id: unit.unit_id.clone(),
        outcome: outcome as i32,
        error: error.to_owned(),
        at_unix_ms: crate::now_unix_ms(),
        spawned_units: report.spawned_units.clone(),
        detail_json: report.detail_json.clone(),
    };
    queue
        .publish(names::EVENTS, Bytes::from(event.encode_to_vec()))
        .await
}

/// Consumes the handler's queue until shutdown.
pub async fn run_worker<H: TaskHandler>(
    handler: Arc<H>,
    ctx: WorkerContext,
) -> Result<WorkerStats, QueueError> {
    let queue_name = handler.queue().to_owned();
    let concurrency = ctx.config.concurrency.max(1);
    let prefetch = ctx.config.prefetch.max(concurrency as u16);
    let mut consumer = ctx.queue.consume(&queue_name, prefetch).await?;
    tracing::info!(queue = %queue_name, concurrency, prefetch, "worker consuming");
    let mut running: JoinSet<Settled> = JoinSet::new();
    let mut stats = WorkerStats::default();
    let mut tally = |settled: Settled| match settled {
        Settled::Done => stats.done += 1,
        Settled::Failed => stats.failed += 1,
        Settled::Requeued => stats.requeued += 1,
    };
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            Some(finished) = running.join_next(), if !running.is_empty() => {
                if let Ok(settled) = finished { tally(settled) }
            }
            delivery = consumer.next(), if running.len() < concurrency => {
                let Some(delivery) = delivery else { break };
                running.spawn(process_delivery(handler.clone(), ctx.clone(), delivery));
            }
        }
    }
    tracing::info!(queue = %queue_name, in_flight = running.len(), "worker draining");
    let deadline = Instant::now() + Duration::from_millis(ctx.config.drain_timeout_ms);
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline.into(), running.join_next()).await {
            Ok(Some(Ok(settled))) => tally(settled),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                // Aborted units drop their deliveries, which returns them to the queue.
                tracing::warn!(queue = %queue_name, left = running.len(), "drain timeout; requeueing unfinished units");
                running.abort_all();
                while running.join_next().await.is_some() {}
                break;
            }
        }
    }
    drop(consumer);
    tracing::info!(queue = %queue_name, done = stats.done, failed = stats.failed, requeued = stats.requeued, "worker stopped");
    Ok(stats)
}

async fn process_delivery<H: TaskHandler>(
    handler: Arc<H>,
    ctx: WorkerContext,
    delivery: Delivery,
) -> Settled {
    let stage = H::STAGE;
    let task = match H::Task::decode(delivery.payload.clone()) {
        Ok(task) => task,
        Err(err) => {
            let reason = format!("undecodable {} task: {err}", stage.key_name());
            tracing::error!(stage = stage.key_name(), %reason, "poison message dead-lettered");
            record_unit(stage.key_name(), "failed", 0.0);
            if let Err(err) = delivery.reject(&reason).await {
                tracing::error!(error = %err, "could not dead-letter a poison message");
            }
            return Settled::Failed;
        }
    };
    let unit = H::unit(&task);
    let span = tracing::info_span!("unit", job_id = %unit.job_id, unit_id = %unit.unit_id, stage = stage.key_name(), attempt = delivery.delivery_count);
    async move {
        let labels = StageLabels { stage: stage.key_name().to_owned() };
        let gauge = metrics().in_flight.get_or_create(&labels).clone();
        gauge.inc();
        let started = Instant::now();
        // A panicking handler must not take the worker down: run it as its own task.
        let result = match tokio::spawn({
            let handler = handler.clone();
            async move { handler.handle(task).await }
        })
        .await
        {
            Ok(result) => result,
            Err(join_err) => Err(TaskError::Transient(format!("handler panicked: {join_err}"))),
        };
        gauge.dec();
        let seconds = started.elapsed().as_secs_f64();
        let last_attempt = delivery.delivery_count > ctx.delivery_limit;
        match result {
            Ok(report) => {
                if let Err(err) = publish_event(&ctx.queue, &unit, stage, Outcome::Done, "", &report).await {
                    // Without the event the coordinator would wait forever: retry the unit.
                    tracing::warn!(error = %err, "done event not published; requeueing");
                    let _ = delivery.requeue().await;
                    record_unit(stage.key_name(), "requeued", seconds);
                    return Settled::Requeued;
                }
                if let Err(err) = delivery.ack().await {
                    tracing::warn!(error = %err, "ack failed; the unit will be redelivered");
                }
                record_unit(stage.key_name(), "done", seconds);
                tracing::info!(seconds, "unit done");
                Settled::Done
            }
            Err(TaskError::Transient(reason)) if !last_attempt => {
                tracing::warn!(%reason, "unit failed transiently; requeueing");
                record_unit(stage.key_name(), "requeued", seconds);
                if let Err(err) = delivery.requeue().await {
                    tracing::warn!(error = %err, "requeue failed; the broker will redeliver");
                }
                Settled::Requeued
            }
            Err(err) => {
                let (kind, reason) = match err {
                    TaskError::Transient(reason) => ("retries_exhausted".to_owned(), reason),
                    TaskError::Permanent { kind, reason } => (kind, reason),
                };
                tracing::error!(%kind, %reason, "unit failed");
                record_unit(stage.key_name(), "failed", seconds);
                let record = FailureRecord::new(&unit.job_id, stage, &unit.unit_id, &kind, &reason);
                if let Err(err) = write_failure(ctx.store.as_ref(), &record).await {
                    tracing::warn!(error = %err, "failure record not written; requeueing");
                    let _ = delivery.requeue().await;
                    return Settled::Requeued;
                }
                let message = format!("{kind}: {reason}");
                if let Err(err) = publish_event(&ctx.queue, &unit, stage, Outcome::Failed, &message, &UnitReport::default()).await {
                    tracing::warn!(error = %err, "failed event not published; requeueing");
                    let _ = delivery.requeue().await;
                    return Settled::Requeued;
                }
                if let Err(err) = delivery.reject(&message).await {
                    tracing::warn!(error = %err, "dead-lettering failed; the broker will redeliver");
                }
                Settled::Failed
            }
        }
    }
    .instrument(span)
    .await
}
