//! `deepcuts demo`: the whole pipeline on one machine, on embedded defaults.
//!
//! It starts the simulated shop on loopback and runs each stage's worker in
//! this process, on the in-process queue and a file store under
//! `./deepcuts-data` — the same handlers Kubernetes runs as separate pods.
//! Stages run as far as the pipeline goes today: crawl (the other stages are
//! added here as they land).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use deepcuts_core::failures::list_failures;
use deepcuts_core::queue::{InProcessQueue, QueueHandle};
use deepcuts_core::storage::{LocalStore, Store};
use deepcuts_core::worker::{run_worker, TaskHandler, WorkerConfig, WorkerContext};
use deepcuts_core::{keys, parquet_io};
use deepcuts_scraper::worker::{start_crawl, CrawlHandler, PageState};
use deepcuts_scraper::CrawlSpec;
use deepcuts_shopsim::{CatalogueConfig, ShopConfig};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::output::{print_json, progress_bar, table};

const DELIVERY_LIMIT: u32 = 5;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Tracks in the simulated shop, spread evenly over the 9 genres.
    #[arg(long, default_value_t = 270)]
    tracks: usize,
    /// Seed of the simulated shop; the same seed gives the same catalogue.
    #[arg(long, default_value_t = 2017)]
    seed: u64,
    /// Length of each synthesised preview.
    #[arg(long, default_value_t = 30.0)]
    preview_seconds: f32,
    /// Where the file store lives.
    #[arg(long, default_value = "./deepcuts-data")]
    data_dir: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct StageSummary {
    stage: &'static str,
    units: usize,
    failed: usize,
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct DemoSummary {
    job_id: String,
    store: String,
    stages: Vec<StageSummary>,
    tracks_per_genre: BTreeMap<String, usize>,
}

/// Runs one stage's worker in this process until `stop` is cancelled.
fn spawn_worker<H: TaskHandler>(
    handler: H,
    store: &Store,
    queue: &QueueHandle,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let ctx = WorkerContext {
        queue: queue.clone(),
        store: store.clone(),
        config: WorkerConfig {
            concurrency: 2,
            prefetch: 2,
            ..WorkerConfig::default()
        },
        delivery_limit: DELIVERY_LIMIT,
        shutdown: stop.clone(),
    };
    tokio::spawn(async move {
        if let Err(err) = run_worker(Arc::new(handler), ctx).await {
            tracing::error!(error = %err, "worker stopped with an error");
        }
    })
}

async fn crawl_states(store: &Store, job_id: &str) -> anyhow::Result<Vec<PageState>> {
    let mut states = Vec::new();
    for key in store.list(&format!("jobs/{job_id}/crawl/state/")).await? {
        states.push(serde_json::from_slice(&store.get(&key).await?)?);
    }
    Ok(states)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stop = deepcuts_core::shutdown::install_signal_handlers();
    let shop = deepcuts_shopsim::start(
        ShopConfig {
            catalogue: CatalogueConfig {
                seed: args.seed,
                tracks: args.tracks,
                ..CatalogueConfig::default()
            },
            preview_seconds: args.preview_seconds,
            ..ShopConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await
    .context("starting the simulated shop")?;
    let store: Store =
        Arc::new(LocalStore::new(&args.data_dir).context("opening the data directory")?);
    let queue: QueueHandle = Arc::new(InProcessQueue::new(DELIVERY_LIMIT));
    let job_id = format!("demo-{}-{}", args.seed, args.tracks);
    // A demo run starts fresh: its keys are deterministic, so remove the last run's.
    for key in store.list(&keys::job_root(&job_id)).await? {
        store.delete(&key).await?;
    }
    if !args.json {
        eprintln!(
            "simulated shop at {} ({} tracks); store {}; job {job_id}",
            shop.start_url(),
            args.tracks,
            store.url()
        );
    }
    let mut stages = Vec::new();

    // Stage 1: crawl.
    let started = Instant::now();
    let crawler = spawn_worker(
        CrawlHandler::new(store.clone(), queue.clone()),
        &store,
        &queue,
        &stop,
    );
    start_crawl(
        &store,
        &queue,
        &job_id,
        &CrawlSpec::new(shop.start_url()).impolite(),
    )
    .await
    .map_err(|err| anyhow::anyhow!("starting the crawl: {err}"))?;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        progress_bar(args.tracks as u64, "crawl")
    };
    loop {
        anyhow::ensure!(!stop.is_cancelled(), "interrupted");
        let states = crawl_states(&store, &job_id).await?;
        let tracks = states.iter().map(|s| s.tracks_through).max().unwrap_or(0);
        bar.set_position(tracks);
        bar.set_message(format!("{} pages", states.len()));
        if states.iter().any(|s| s.published && s.next.is_none()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let failed = list_failures(
        store.as_ref(),
        &job_id,
        Some(deepcuts_core::proto::Stage::Crawl),
    )
    .await?;
    let pages = store.list(&keys::catalogue_prefix(&job_id)).await?;
    stages.push(StageSummary {
        stage: "crawl",
        units: pages.len(),
        failed: failed.len(),
        seconds: started.elapsed().as_secs_f64(),
    });

    let mut tracks_per_genre = BTreeMap::new();
    for key in &pages {
        for batch in parquet_io::read_batches(store.as_ref(), key).await? {
            for row in deepcuts_scraper::catalogue::from_batch(&batch)? {
                *tracks_per_genre
                    .entry(row.genre.unwrap_or_else(|| "(none)".into()))
                    .or_insert(0) += 1;
            }
        }
    }

    stop.cancel();
    crawler.await?;
    let summary = DemoSummary {
        job_id,
        store: store.url(),
        stages,
        tracks_per_genre,
    };
    if args.json {
        return print_json(&summary);
    }
    let mut timings = table(["stage", "units", "failed", "seconds"]);
    for s in &summary.stages {
        timings.add_row(vec![
            s.stage.to_owned(),
            s.units.to_string(),
            s.failed.to_string(),
            format!("{:.1}", s.seconds),
        ]);
    }
    println!("{timings}");
    let mut genres = table(["genre", "tracks"]);
    for (genre, count) in &summary.tracks_per_genre {
        genres.add_row(vec![genre.clone(), count.to_string()]);
    }
    println!("{genres}");
    println!(
        "The catalogue of job {} is in {}; look with `deepcuts store ls {}`.",
        summary.job_id,
        summary.store,
        keys::job_root(&summary.job_id)
    );
    Ok(())
}
