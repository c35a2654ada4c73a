//! The crawl worker on the core worker loop: in-process with the in-process
//! queue, and as a `deepcuts-scraper` process on a real RabbitMQ (started by
//! scripts/test.sh) that is killed with SIGKILL mid-crawl.

use std::sync::Arc;
use std::time::Duration;

use deepcuts_core::queue::{names, InProcessQueue, QueueHandle};
use deepcuts_core::storage::{LocalStore, Store};
use deepcuts_core::worker::{run_worker, WorkerConfig, WorkerContext};
use deepcuts_core::{keys, parquet_io};
use deepcuts_scraper::catalogue::from_batch;
use deepcuts_scraper::worker::{start_crawl, CrawlHandler, PageState};
use deepcuts_scraper::{CatalogueRow, CrawlSpec};
use deepcuts_shopsim::{CatalogueConfig, ShopConfig, ShopHandle, Template};
use tokio_util::sync::CancellationToken;

async fn shop() -> ShopHandle {
    shop_with_latency(Duration::from_millis(25)).await
}

async fn shop_with_latency(latency: Duration) -> ShopHandle {
    let config = ShopConfig {
        catalogue: CatalogueConfig {
            seed: 5,
            tracks: 90,
            ..CatalogueConfig::default()
        },
        releases_per_page: 4,
        preview_seconds: 1.0,
        faults: deepcuts_shopsim::Faults {
            latency,
            ..Default::default()
        },
        ..ShopConfig::default()
    };
    deepcuts_shopsim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn spec(shop: &ShopHandle) -> CrawlSpec {
    // The second start URL re-reads the shop from page 3: every track on it is a
    // duplicate that must be dropped.
    let mut spec = CrawlSpec::new(shop.start_url()).impolite();
    spec.start_urls.push(shop.url(&Template::Juno.page_path(3)));
    spec
}

fn spawn_worker(
    store: &Store,
    queue: &QueueHandle,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let shutdown = CancellationToken::new();
    let ctx = WorkerContext {
        queue: queue.clone(),
        store: store.clone(),
        config: WorkerConfig::default(),
        delivery_limit: 5,
        shutdown: shutdown.clone(),
    };
    let handler = Arc::new(CrawlHandler::new(store.clone(), queue.clone()));
    let task = tokio::spawn(async move {
        run_worker(handler, ctx).await.unwrap();
    });
    (task, shutdown)
}

async fn states(store: &Store, job: &str) -> Vec<PageState> {
    let mut out = Vec::new();
    for key in store
        .list(&format!("jobs/{job}/crawl/state/"))
        .await
        .unwrap()
    {
        out.push(serde_json::from_slice(&store.get(&key).await.unwrap()).unwrap());
    }
    out
}

async fn wait_until_finished(store: &Store, job: &str) {
    for _ in 0..1500 {
        if states(store, job)
            .await
            .iter()
            .any(|s| s.published && s.next.is_none())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("crawl of {job} did not finish");
}

async fn catalogue(store: &Store, job: &str) -> Vec<(String, Vec<CatalogueRow>)> {
    let prefix = keys::catalogue_prefix(job);
    let mut pages = Vec::new();
    for key in store.list(&prefix).await.unwrap() {
        let mut rows = Vec::new();
        for batch in parquet_io::read_batches(store.as_ref(), &key)
            .await
            .unwrap()
        {
            rows.extend(from_batch(&batch).unwrap());
        }
        pages.push((key.trim_start_matches(&prefix).to_string(), rows));
    }
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_resumes_to_the_same_catalogue() {
    let shop = shop().await;
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());

    // Uninterrupted crawl.
    let memory = Arc::new(InProcessQueue::new(5));
    let queue: QueueHandle = memory.clone();
    start_crawl(&store, &queue, "whole", &spec(&shop))
        .await
        .unwrap();
    let (worker, stop) = spawn_worker(&store, &queue);
    wait_until_finished(&store, "whole").await;
    stop.cancel();
    worker.await.unwrap();
    let whole = catalogue(&store, "whole").await;
    let truth = shop.truth();
    let rows: Vec<_> = whole.iter().flat_map(|(_, r)| r.iter()).collect();
    assert_eq!(rows.len(), truth.tracks.len(), "each track kept once");
    let mut ids: Vec<_> = rows.iter().map(|r| r.track_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), truth.tracks.len());
    // Chain one reads every page; chain two re-reads pages 3.. and keeps nothing.
    assert_eq!(whole.len(), truth.pages + truth.pages - 2);
    assert!(whole[truth.pages..].iter().all(|(_, r)| r.is_empty()));
    let non_empty = whole.iter().filter(|(_, r)| !r.is_empty()).count();
    assert_eq!(
        memory.ready_len(names::TRANSCODE),
        non_empty,
        "one transcode task per page with tracks"
    );

    // Same crawl, killed mid-way (the worker task is aborted with pages in flight,
    // as SIGKILL would), then a fresh worker on the same queue and store.
    let queue: QueueHandle = Arc::new(InProcessQueue::new(5));
    start_crawl(&store, &queue, "killed", &spec(&shop))
        .await
        .unwrap();
    let (worker, _stop) = spawn_worker(&store, &queue);
    for _ in 0..1000 {
        if store
            .list(&keys::catalogue_prefix("killed"))
            .await
            .unwrap()
            .len()
            >= 4
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.abort();
    let _ = worker.await;
    let at_kill = store
        .list(&keys::catalogue_prefix("killed"))
        .await
        .unwrap()
        .len();
    assert!(
        at_kill >= 4 && at_kill < whole.len(),
        "killed after {at_kill} pages"
    );
    let (worker, stop) = spawn_worker(&store, &queue);
    wait_until_finished(&store, "killed").await;
    stop.cancel();
    worker.await.unwrap();

    assert_eq!(catalogue(&store, "killed").await, whole);
}

/// The uninterrupted crawl of `shop` by in-process workers, as the reference.
async fn reference_catalogue(store: &Store, shop: &ShopHandle) -> Vec<(String, Vec<CatalogueRow>)> {
    let queue: QueueHandle = Arc::new(InProcessQueue::new(5));
    start_crawl(store, &queue, "whole", &spec(shop))
        .await
        .unwrap();
    let (worker, stop) = spawn_worker(store, &queue);
    wait_until_finished(store, "whole").await;
    stop.cancel();
    worker.await.unwrap();
    catalogue(store, "whole").await
}

/// Kills the worker process however the test ends.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_killed_with_sigkill_resumes_on_rabbitmq() {
    let amqp_url = std::env::var("DEEPCUTS_TEST_AMQP_URL").expect(
        "DEEPCUTS_TEST_AMQP_URL is not set: run the tests with scripts/test.sh, which starts RabbitMQ",
    );
    let shop = shop_with_latency(Duration::from_millis(60)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let whole = reference_catalogue(&store, &shop).await;

    let queue = deepcuts_core::queue::open_queue(&deepcuts_core::queue::QueueConfig {
        url: amqp_url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The broker is shared with other tests: this job's id is unique.
    let job = format!("killed-{}", std::process::id());
    start_crawl(&store, &queue, &job, &spec(&shop))
        .await
        .unwrap();
    let spawn = || {
        Worker(
            std::process::Command::new(env!("CARGO_BIN_EXE_deepcuts-scraper"))
                .env("DEEPCUTS__STORE__URL", store.url())
                .env("DEEPCUTS__QUEUE__URL", &amqp_url)
                .env("DEEPCUTS__OPS__LISTEN", "127.0.0.1:0")
                .spawn()
                .expect("start deepcuts-scraper"),
        )
    };
    let mut first = spawn();
    let mut pages = 0;
    for _ in 0..3000 {
        pages = store
            .list(&keys::catalogue_prefix(&job))
            .await
            .unwrap()
            .len();
        if pages >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(pages >= 3, "the worker process wrote {pages} pages in 15 s");
    first.0.kill().expect("SIGKILL the worker"); // Child::kill sends SIGKILL on Unix
    first.0.wait().unwrap();
    let at_kill = store
        .list(&keys::catalogue_prefix(&job))
        .await
        .unwrap()
        .len();
    assert!(
        at_kill < whole.len(),
        "killed after {at_kill} of {} pages",
        whole.len()
    );

    let second = spawn();
    wait_until_finished(&store, &job).await;
    drop(second);
    assert_eq!(
        catalogue(&store, &job).await,
        whole,
        "same catalogue files as the uninterrupted crawl"
    );
}
