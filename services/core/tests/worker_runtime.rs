//! The shared worker loop on the in-process queue: outcomes map to acks,
//! requeues, failure records, stage events and dead letters; shutdown drains.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deepcuts_core::failures::list_failures;
use deepcuts_core::proto::{EmbedTask, Outcome, Stage, StageEvent};
use deepcuts_core::queue::{names, QueueHandle};
use deepcuts_core::storage::{LocalStore, Store};
use deepcuts_core::worker::{
    run_worker, TaskError, TaskHandler, UnitRef, UnitReport, WorkerConfig, WorkerContext,
    WorkerStats,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

/// Behaves by the task's `part`: 0 ok, 1 permanent failure, 2 transient once
/// then ok, 3 always transient, 4 panics once then ok, 5 slow.
struct ScriptedHandler {
    queue: String,
    attempts: AtomicU32,
    panicked: AtomicU32,
}

impl TaskHandler for ScriptedHandler {
    type Task = EmbedTask;
    const STAGE: Stage = Stage::Embed;

    fn queue(&self) -> &str {
        &self.queue
    }

    fn unit(task: &EmbedTask) -> UnitRef {
        UnitRef {
            job_id: task.job_id.clone(),
            unit_id: format!("part-{}", task.part),
        }
    }

    async fn handle(&self, task: EmbedTask) -> Result<UnitReport, TaskError> {
        match task.part {
            0 => Ok(UnitReport {
                spawned_units: vec!["next".into()],
                detail_json: "{\"windows\":3}".into(),
            }),
            1 => Err(TaskError::permanent("decode", "not an mp3")),
            2 if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 => {
                Err(TaskError::Transient("503".into()))
            }
            2 => Ok(UnitReport::default()),
            3 => Err(TaskError::Transient("timeout".into())),
            4 if self.panicked.fetch_add(1, Ordering::SeqCst) == 0 => panic!("handler bug"),
            4 => Ok(UnitReport::default()),
            _ => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(UnitReport::default())
            }
        }
    }
}

fn task(part: u32) -> Bytes {
    Bytes::from(
        EmbedTask {
            job_id: "job-1".into(),
            model_id: "m".into(),
            spectrogram_key: "k".into(),
            part,
        }
        .encode_to_vec(),
    )
}

async fn drain_events(queue: &QueueHandle) -> Vec<StageEvent> {
    let mut consumer = queue.consume(names::EVENTS, 100).await.unwrap();
    let mut events = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
    {
        events.push(StageEvent::decode(d.payload.clone()).unwrap());
        d.ack().await.unwrap();
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_become_acks_failure_records_events_and_dead_letters() {
    let delivery_limit = 2;
    let queue = common::memory_queue(delivery_limit).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let q = common::unique("embed");
    for part in [0, 1, 2, 3, 4] {
        queue.publish(&q, task(part)).await.unwrap();
    }
    queue
        .publish(&q, Bytes::from_static(b"\xff\xff not protobuf"))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let handler = Arc::new(ScriptedHandler {
        queue: q.clone(),
        attempts: AtomicU32::new(0),
        panicked: AtomicU32::new(0),
    });
    let ctx = WorkerContext {
        queue: queue.clone(),
        store: store.clone(),
        config: WorkerConfig {
            concurrency: 2,
            prefetch: 2,
            drain_timeout_ms: 5_000,
        },
        delivery_limit,
        shutdown: shutdown.clone(),
    };
    let worker = tokio::spawn(run_worker(handler, ctx));
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    let stats: WorkerStats = worker.await.unwrap().unwrap();
    // done: 0, 2 (after one retry), 4 (after one panic); failed: 1, 3 (retries exhausted), poison.
    assert_eq!(stats.done, 3, "{stats:?}");
    assert_eq!(stats.failed, 3, "{stats:?}");
    assert_eq!(stats.requeued, 1 + 1 + delivery_limit as u64, "{stats:?}");

    let failures = list_failures(store.as_ref(), "job-1", Some(Stage::Embed))
        .await
        .unwrap();
    let mut kinds: Vec<_> = failures
        .iter()
        .map(|f| (f.unit_id.clone(), f.kind.clone()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("part-1".into(), "decode".into()),
            ("part-3".into(), "retries_exhausted".into())
        ]
    );

    let events = drain_events(&queue).await;
    let done: Vec<_> = events
        .iter()
        .filter(|e| e.outcome == Outcome::Done as i32)
        .map(|e| e.unit_id.clone())
        .collect();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.outcome == Outcome::Failed as i32)
        .map(|e| e.unit_id.clone())
        .collect();
    assert_eq!(done.len(), 3);
    assert!(done.contains(&"part-0".to_owned()));
    let first = events.iter().find(|e| e.unit_id == "part-0").unwrap();
    assert_eq!(first.spawned_units, vec!["next".to_owned()]);
    assert_eq!(first.stage, Stage::Embed as i32);
    assert!(failed.contains(&"part-1".to_owned()) && failed.contains(&"part-3".to_owned()));

    let mut dead = queue.consume(&names::dead_letter(&q), 10).await.unwrap();
    let mut reasons = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), dead.next()).await {
        reasons.push(d.dead_letter_reason.clone().unwrap());
        d.ack().await.unwrap();
    }
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].starts_with("decode: not an mp3"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("retries_exhausted: timeout"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("undecodable embed task"),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_units_and_leaves_the_rest_queued() {
    let queue = common::memory_queue(5).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let q = common::unique("slow");
    for _ in 0..6 {
        queue.publish(&q, task(9)).await.unwrap();
    }
    let shutdown = CancellationToken::new();
    let handler = Arc::new(ScriptedHandler {
        queue: q.clone(),
        attempts: AtomicU32::new(0),
        panicked: AtomicU32::new(0),
    });
    let ctx = WorkerContext {
        queue: queue.clone(),
        store,
        config: WorkerConfig {
            concurrency: 2,
            prefetch: 2,
            drain_timeout_ms: 5_000,
        },
        delivery_limit: 5,
        shutdown: shutdown.clone(),
    };
    let worker = tokio::spawn(run_worker(handler, ctx));
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!(stats.done, 2, "the two in-flight units finish: {stats:?}");
    let mut consumer = queue.consume(&q, 10).await.unwrap();
    let mut left = 0;
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
    {
        left += 1;
        d.ack().await.unwrap();
    }
    assert_eq!(left, 4, "untouched units stay queued");
}
