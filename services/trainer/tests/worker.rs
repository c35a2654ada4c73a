//! The train worker on the core loop: the same task delivered twice trains
//! one model once, both deliveries end `Done`, and every epoch publishes a
//! `Progress` event.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deepcuts_core::proto::{Outcome, Stage, StageEvent, TrainTask};
use deepcuts_core::queue::{names, InProcessQueue, QueueHandle};
use deepcuts_core::storage::{LocalStore, Store};
use deepcuts_core::worker::{run_worker, WorkerConfig, WorkerContext};
use deepcuts_trainer::artifact;
use deepcuts_trainer::config::TrainConfig;
use deepcuts_trainer::data::Augment;
use deepcuts_trainer::fixtures::TinyCatalogue;
use deepcuts_trainer::metrics::EpochMetrics;
use deepcuts_trainer::worker::{TrainHandler, TrainerSettings};
use deepcuts_trainer::BlockingStore;
use prost::Message;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_train_task_trains_once_and_reports_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let blocking = BlockingStore::new(store.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        TinyCatalogue {
            job_id: "job".into(),
            genres: 2,
            tracks_per_genre: 8,
            windows_per_track: 3,
            bands: 16,
            frames: 16,
            tracks_per_part: 8,
            seed: 3,
        }
        .write(&blocking)
        .unwrap();
    })
    .await
    .unwrap();

    let queue: QueueHandle = Arc::new(InProcessQueue::new(5));
    let task = TrainTask {
        job_id: "job".into(),
        model_id: "dup".into(),
        architecture: "default".into(),
        objective: "genre".into(),
        data_job_ids: vec![],
        train_config_key: String::new(),
    };
    for _ in 0..2 {
        queue
            .publish(names::TRAIN, Bytes::from(task.encode_to_vec()))
            .await
            .unwrap();
    }
    let settings = TrainerSettings {
        lease_ttl_s: 60,
        lease_renew_s: 1,
        watch_poll_s: 1,
        claim_settle_ms: 100,
        defaults: TrainConfig {
            epochs: 2,
            batch_size: 4,
            threads: 1,
            width: 4,
            embedding_dim: 8,
            shuffle_buffer: 8,
            min_tracks_per_genre: 2,
            augment: Augment::none(),
            ..TrainConfig::default()
        },
    };
    let shutdown = CancellationToken::new();
    let handler = Arc::new(TrainHandler::new(
        store.clone(),
        queue.clone(),
        settings,
        shutdown.clone(),
    ));
    let ctx = WorkerContext {
        queue: queue.clone(),
        store: store.clone(),
        config: WorkerConfig {
            concurrency: 2,
            prefetch: 2,
            drain_timeout_ms: 5_000,
        },
        delivery_limit: 5,
        shutdown: shutdown.clone(),
    };
    let worker = tokio::spawn(run_worker(handler, ctx));

    let mut events = queue.consume(names::EVENTS, 16).await.unwrap();
    let (mut done, mut progress) = (Vec::new(), Vec::new());
    while done.len() < 2 {
        let delivery = tokio::time::timeout(Duration::from_secs(120), events.next())
            .await
            .expect("events within two minutes")
            .expect("the events queue stays open");
        let event = StageEvent::decode(delivery.payload.clone()).unwrap();
        delivery.ack().await.unwrap();
        assert_eq!(event.stage, Stage::Train as i32);
        assert_eq!(
            (event.job_id.as_str(), event.unit_id.as_str()),
            ("job", "dup")
        );
        match Outcome::try_from(event.outcome).unwrap() {
            Outcome::Done => done.push(event),
            Outcome::Progress => progress.push(event),
            other => panic!("unexpected {other:?}: {}", event.error),
        }
    }
    shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!((stats.done, stats.failed), (2, 0));

    // One run trained; the other waited and reported the finished model.
    let details: Vec<serde_json::Value> = done
        .iter()
        .map(|e| serde_json::from_str(&e.detail_json).unwrap())
        .collect();
    let trained = details
        .iter()
        .filter(|d| d["already_done"] == false)
        .count();
    assert_eq!(trained, 1, "{details:?}");
    assert_eq!(progress.len(), 2, "one progress event per epoch");
    let epochs: Vec<u32> = progress
        .iter()
        .map(|e| {
            serde_json::from_str::<EpochMetrics>(&e.detail_json)
                .unwrap()
                .epoch
        })
        .collect();
    assert_eq!(epochs, vec![1, 2]);
    assert!(store.exists(&artifact::card_key("dup")).await.unwrap());
    assert!(
        !store.exists(&artifact::claim_key("dup")).await.unwrap(),
        "the lease is released"
    );
}
