//! Four index workers sharing one job through a queue write exactly the
//! table that one process writes: four in-process workers on the in-process
//! queue, and four `deepcuts-indexer worker` processes on a real RabbitMQ and
//! S3 (started by scripts/test.sh).

use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use deepcuts_core::keys;
use deepcuts_core::parquet_io::{read_parquet, write_batches};
use deepcuts_core::queue::{InProcessQueue, QueueHandle};
use deepcuts_core::storage::{LocalStore, ObjectStore, Store};
use deepcuts_indexer::job::{build_table, near_duplicates_block};
use deepcuts_indexer::parity::{publish_blocks, run_workers_until_done, JobBlocks};
use deepcuts_indexer::worker::IndexerSettings;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MODEL: &str = "m1";
const DIM: usize = 24;
const TRACKS: usize = 1500;
const BLOCKS: u32 = 7;

/// Clustered embeddings in three parts, ids shuffled across parts, with two
/// exact duplicates and one zero vector.
async fn write_embeddings(store: &dyn ObjectStore, job: &str) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..DIM).map(|_| rng.random::<f32>() - 0.5).collect())
        .collect();
    let mut rows: Vec<(String, Vec<f32>)> = (0..TRACKS)
        .map(|i| {
            let centre = &centres[rng.random_range(0..centres.len())];
            let v = centre
                .iter()
                .map(|c| c + 0.15 * (rng.random::<f32>() - 0.5))
                .collect();
            (format!("track-{:05}", (i * 7919) % 100_000), v)
        })
        .collect();
    rows[10].1 = rows[500].1.clone();
    rows[11].1 = rows[500].1.clone();
    rows[12].1 = vec![0.0; DIM];
    let schema = Arc::new(Schema::new(vec![
        Field::new("track_id", DataType::Utf8, false),
        Field::new("window_count", DataType::UInt32, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                DIM as i32,
            ),
            false,
        ),
    ]));
    for (part, chunk) in rows.chunks(TRACKS / 3 + 1).enumerate() {
        let mut embedding = FixedSizeListBuilder::new(Float32Builder::new(), DIM as i32);
        for (_, v) in chunk {
            embedding.values().append_slice(v);
            embedding.append(true);
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(
                    chunk
                        .iter()
                        .map(|(id, _)| Some(id.as_str()))
                        .collect::<StringArray>(),
                ),
                Arc::new(UInt32Array::from(vec![23u32; chunk.len()])),
                Arc::new(embedding.finish()),
            ],
        )
        .unwrap();
        write_batches(
            store,
            &keys::embeddings_part(job, MODEL, part as u32),
            &[batch],
        )
        .await
        .unwrap();
    }
}

async fn read_block(store: &dyn ObjectStore, key: &str) -> Vec<RecordBatch> {
    read_parquet(store, key).await.unwrap().batches
}

fn settings() -> IndexerSettings {
    IndexerSettings {
        threads: 1,
        // Small tiles, so that 7 blocks of a 1,500-track job are all non-trivial.
        tile_rows: 64,
        near_duplicate_threshold: 0.999,
    }
}

/// The table one process builds for job "solo".
async fn build_solo(store: &Store) {
    write_embeddings(store.as_ref(), "solo").await;

    let params = settings().params(10);
    let report = build_table(store.as_ref(), "solo", MODEL, &params, BLOCKS, Arc::new(()))
        .await
        .unwrap();
    assert_eq!(report.tracks, TRACKS - 1, "the zero vector is left out");
    assert_eq!(report.rejected, 1);
    assert!(
        report.near_duplicates >= 3,
        "rows 10, 11 and 500 are copies"
    );
}

/// Job `shared` (written by workers) equals job "solo", block for block.
async fn assert_same_table(store: &Store, shared_job: &str) {
    let mut rows = 0;
    for block in 0..BLOCKS {
        let solo = read_block(
            store.as_ref(),
            &keys::neighbours_block("solo", MODEL, block),
        )
        .await;
        let shared = read_block(
            store.as_ref(),
            &keys::neighbours_block(shared_job, MODEL, block),
        )
        .await;
        assert_eq!(solo, shared, "neighbour block {block} differs");
        rows += solo.iter().map(RecordBatch::num_rows).sum::<usize>();
        let solo = read_block(store.as_ref(), &near_duplicates_block("solo", MODEL, block)).await;
        let shared = read_block(
            store.as_ref(),
            &near_duplicates_block(shared_job, MODEL, block),
        )
        .await;
        assert_eq!(solo, shared, "near-duplicate block {block} differs");
    }
    assert_eq!(rows, TRACKS - 1);
    // The rejected track has a failure record in both jobs.
    for job in ["solo", shared_job] {
        let failures = store
            .list(&format!("jobs/{job}/failures/index/"))
            .await
            .unwrap();
        assert_eq!(failures.len(), 1, "{job}: {failures:?}");
    }
}

fn blocks_of(job_id: &str) -> JobBlocks {
    JobBlocks {
        job_id: job_id.into(),
        model_id: MODEL.into(),
        block_count: BLOCKS,
        k: 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_on_the_in_process_queue_match_one_process() {
    let queue: QueueHandle = Arc::new(InProcessQueue::new(5));
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());
    build_solo(&store).await;
    write_embeddings(store.as_ref(), "shared").await;
    let job = blocks_of("shared");
    publish_blocks(&queue, &job).await.unwrap();
    run_workers_until_done(
        queue,
        store.clone(),
        &job,
        4,
        settings(),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_same_table(&store, "shared").await;
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts RabbitMQ and SeaweedFS")
    })
}

/// Kills the worker processes however the test ends.
struct Workers(Vec<std::process::Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_indexer_processes_on_rabbitmq_and_s3_match_one_process() {
    use deepcuts_core::proto::{Outcome, StageEvent};
    use deepcuts_core::queue::{names, open_queue, QueueConfig};
    use deepcuts_core::storage::{open_store_with, S3Config, StoreConfig};
    use prost::Message;

    let amqp_url = required_env("DEEPCUTS_TEST_AMQP_URL");
    let s3_endpoint = required_env("DEEPCUTS_TEST_S3_ENDPOINT");
    let store_url = format!(
        "s3://deepcuts-test/indexer-{}",
        uuid::Uuid::new_v4().simple()
    );
    let store = open_store_with(&StoreConfig {
        url: store_url.clone(),
        s3: S3Config {
            endpoint: Some(s3_endpoint.clone()),
            ..S3Config::default()
        },
    })
    .await
    .unwrap();
    let queue = open_queue(&QueueConfig {
        url: amqp_url.clone(),
        ..QueueConfig::default()
    })
    .await
    .unwrap();
    // Other tests may leave events on the shared queue: this job's id is unique.
    let shared = format!("shared-{}", uuid::Uuid::new_v4().simple());
    build_solo(&store).await;
    write_embeddings(store.as_ref(), &shared).await;

    let workers = Workers(
        (0..4)
            .map(|_| {
                std::process::Command::new(env!("CARGO_BIN_EXE_deepcuts-indexer"))
                    .arg("worker")
                    .env("DEEPCUTS__STORE__URL", &store_url)
                    .env("DEEPCUTS__STORE__S3__ENDPOINT", &s3_endpoint)
                    .env("DEEPCUTS__QUEUE__URL", &amqp_url)
                    .env("DEEPCUTS__OPS__LISTEN", "127.0.0.1:0")
                    .env("DEEPCUTS__SETTINGS__THREADS", "1")
                    .env(
                        "DEEPCUTS__SETTINGS__TILE_ROWS",
                        settings().tile_rows.to_string(),
                    )
                    .env(
                        "DEEPCUTS__SETTINGS__NEAR_DUPLICATE_THRESHOLD",
                        settings().near_duplicate_threshold.to_string(),
                    )
                    .spawn()
                    .expect("start deepcuts-indexer")
            })
            .collect(),
    );
    let mut events = queue.consume(names::EVENTS, 64).await.unwrap();
    publish_blocks(&queue, &blocks_of(&shared)).await.unwrap();
    let mut done = std::collections::BTreeSet::new();
    while done.len() < BLOCKS as usize {
        let delivery = tokio::time::timeout(Duration::from_secs(180), events.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {BLOCKS} blocks done within 180 s", done.len()))
            .expect("event consumer open");
        let event = StageEvent::decode(delivery.payload.clone()).unwrap();
        delivery.ack().await.unwrap();
        if event.job_id == shared {
            assert_eq!(
                event.outcome,
                Outcome::Done as i32,
                "block failed: {}",
                event.error
            );
            done.insert(event.unit_id);
        }
    }
    drop(workers);
    assert_same_table(&store, &shared).await;
}
