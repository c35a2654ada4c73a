//! `deepcuts demo`: the whole pipeline on one machine, on embedded defaults.
//!
//! It starts the simulated shop on loopback and runs the coordinator and
//! every stage's worker in this process, on the in-process queue and a file
//! store under `./deepcuts-data`: the same handlers that Kubernetes runs as
//! separate pods. It submits one job, shows a progress bar per stage, prints
//! the stage timings, the holdout figures and three recommendation tables,
//! and then serves the listening page (unless `--no-serve`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use deepcuts_coordinator::{job_report, load_job, Coordinator, JobReport, JobSpec, JobStatus};
use deepcuts_core::queue::{InProcessQueue, QueueHandle};
use deepcuts_core::storage::{LocalStore, Store};
use deepcuts_core::worker::{run_worker, TaskHandler, WorkerConfig, WorkerContext};
use deepcuts_scraper::CrawlSpec;
use deepcuts_shopsim::{CatalogueConfig, ShopConfig};
use indicatif::{MultiProgress, ProgressBar};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::output::{print_json, progress_bar, table};

const DELIVERY_LIMIT: u32 = 5;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Tracks in the simulated shop, spread evenly over the genres.
    #[arg(long, default_value_t = 270)]
    tracks: usize,
    /// How many of the 9 genres the shop sells.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u8).range(2..=9))]
    genres: u8,
    /// Seed of the simulated shop; the same seed gives the same catalogue.
    #[arg(long, default_value_t = 2017)]
    seed: u64,
    /// Length of each synthesised preview.
    #[arg(long, default_value_t = 30.0)]
    preview_seconds: f32,
    /// Training epochs (the trainer stops earlier when validation stalls).
    #[arg(long, default_value_t = 8)]
    epochs: u32,
    /// `default` (log-mel CNN) or `seed` (the 2017 network).
    #[arg(long, default_value = "default", value_parser = ["default", "seed"])]
    model: String,
    /// `genre` or `contrastive` (label-free).
    #[arg(long, default_value = "genre", value_parser = ["genre", "contrastive"])]
    objective: String,
    /// Where the file store lives.
    #[arg(long, default_value = "./deepcuts-data")]
    data_dir: std::path::PathBuf,
    /// Do not serve the listening page at the end.
    #[arg(long)]
    no_serve: bool,
    /// Address of the listening page.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Print the summary as JSON (implies --no-serve).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Example {
    track: String,
    genre: String,
    neighbours: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct DemoSummary {
    store: String,
    report: JobReport,
    baseline: Option<deepcuts_trainer::baseline::BaselineReport>,
    examples: Vec<Example>,
}

/// Runs one stage's worker in this process until `stop` is cancelled.
fn spawn_worker<H: TaskHandler>(
    handler: H,
    concurrency: usize,
    store: &Store,
    queue: &QueueHandle,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let ctx = WorkerContext {
        queue: queue.clone(),
        store: store.clone(),
        config: WorkerConfig {
            concurrency,
            prefetch: concurrency as u16,
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

/// The pipeline's workers and the coordinator, on one store and one queue.
fn spawn_pipeline(
    store: &Store,
    queue: &QueueHandle,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = vec![
        spawn_worker(
            deepcuts_scraper::worker::CrawlHandler::new(store.clone(), queue.clone()),
            2,
            store,
            queue,
            stop,
        ),
        // One batch at a time: a batch already decodes its tracks on every core.
        spawn_worker(
            deepcuts_transcoder::TranscodeHandler::new(
                store.clone(),
                deepcuts_transcoder::TranscoderSettings::default(),
            )?,
            1,
            store,
            queue,
            stop,
        ),
        spawn_worker(
            deepcuts_trainer::worker::TrainHandler::new(
                store.clone(),
                queue.clone(),
                deepcuts_trainer::worker::TrainerSettings {
                    // Alone in this process: no other trainer to wait for.
                    claim_settle_ms: 0,
                    ..Default::default()
                },
                stop.clone(),
            ),
            1,
            store,
            queue,
            stop,
        ),
        spawn_worker(
            deepcuts_embedder::EmbedHandler::new(
                store.clone(),
                deepcuts_embedder::EmbedderSettings::default(),
            ),
            1,
            store,
            queue,
            stop,
        ),
        spawn_worker(
            deepcuts_indexer::worker::IndexWorker::new(
                store.clone(),
                deepcuts_indexer::worker::IndexerSettings::default(),
            ),
            1,
            store,
            queue,
            stop,
        ),
    ];
    let coordinator = Coordinator::new(store.clone(), queue.clone());
    let coordinator_stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(err) = coordinator.run(coordinator_stop).await {
            tracing::error!(error = %err, "coordinator stopped with an error");
        }
    }));
    Ok(tasks)
}

/// One bar per stage, driven from the job's report.
struct StageBars {
    bars: Vec<ProgressBar>,
}

impl StageBars {
    fn new(hidden: bool) -> Self {
        let multi = MultiProgress::new();
        let bars = ["crawl", "transcode", "train", "embed", "index"]
            .iter()
            .map(|stage| {
                if hidden {
                    ProgressBar::hidden()
                } else {
                    multi.add(progress_bar(0, stage))
                }
            })
            .collect();
        Self { bars }
    }

    fn update(&self, report: &JobReport) {
        for (bar, stage) in self.bars.iter().zip(&report.stages) {
            bar.set_length(stage.issued as u64);
            bar.set_position((stage.done + stage.failed) as u64);
            let mut message = String::new();
            if stage.failed > 0 {
                message = format!("{} failed", stage.failed);
            }
            if stage.stage == "train" {
                if let Some(progress) = &report.training_progress {
                    let epoch = progress.get("epoch").and_then(|v| v.as_u64()).unwrap_or(0);
                    let loss = progress.get("val_loss").and_then(|v| v.as_f64());
                    message = match loss {
                        Some(loss) => format!("epoch {epoch}, val loss {loss:.3}"),
                        None => format!("epoch {epoch}"),
                    };
                }
            }
            bar.set_message(message);
        }
    }

    fn finish(&self) {
        for bar in &self.bars {
            bar.finish_and_clear();
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stop = deepcuts_core::shutdown::install_signal_handlers();
    let shop = deepcuts_shopsim::start(
        ShopConfig {
            catalogue: CatalogueConfig {
                seed: args.seed,
                tracks: args.tracks,
                genres: deepcuts_shopsim::Genre::ALL[..usize::from(args.genres)].to_vec(),
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
    let job_id = format!(
        "demo-{}-{}x{}-{}-{}",
        args.seed, args.genres, args.tracks, args.model, args.objective
    );
    // A demo run starts fresh: its keys are deterministic, so remove the last
    // run's job and model.
    let model_id = format!("{job_id}-{}-{}", args.model, args.objective);
    for prefix in [
        deepcuts_core::keys::job_root(&job_id),
        deepcuts_core::keys::model_dir(&model_id),
    ] {
        for key in store.list(&prefix).await? {
            store.delete(&key).await?;
        }
    }
    if !args.json {
        eprintln!(
            "simulated shop at {} ({} tracks, {} genres); store {}; job {job_id}",
            shop.start_url(),
            args.tracks,
            args.genres,
            store.url()
        );
    }
    let workers_stop = stop.child_token();
    let workers = spawn_pipeline(&store, &queue, &workers_stop)?;
    let spec = JobSpec {
        job_id: job_id.clone(),
        crawl: CrawlSpec::new(shop.start_url()).impolite(),
        model: deepcuts_coordinator::ModelChoice {
            architecture: args.model.clone(),
            objective: args.objective.clone(),
            model_id: Some(model_id.clone()),
            train_config: Some(serde_json::json!({ "epochs": args.epochs })),
            ..Default::default()
        },
        index: Default::default(),
    };
    deepcuts_coordinator::submit(&store, &queue, spec)
        .await
        .context("submitting the demo job")?;

    let bars = StageBars::new(args.json);
    let job = loop {
        anyhow::ensure!(!stop.is_cancelled(), "interrupted");
        let job = load_job(&store, &job_id)
            .await?
            .context("the job state disappeared")?;
        bars.update(&job_report(&store, &job).await?);
        if job.status.is_terminal() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bars.finish();
    workers_stop.cancel();
    for worker in workers {
        worker.await?;
    }
    let report = job_report(&store, &job).await?;
    anyhow::ensure!(
        job.status == JobStatus::Done,
        "the demo job ended {}: {}",
        job.status.as_str(),
        job.error.as_deref().unwrap_or("no reason recorded")
    );

    let library = deepcuts_server::Library::load(store.as_ref(), &job_id, Some(&job.model_id))
        .await
        .context("loading the neighbour table")?;
    let examples = examples(&library);
    // The static-timbre baseline on the same holdout, for comparison (genre models only).
    let baseline = if args.objective == "genre" {
        match crate::commands::baseline::compute(store.clone(), &job_id).await {
            Ok(report) => Some(report),
            Err(err) => {
                eprintln!("baseline not computed: {err:#}");
                None
            }
        }
    } else {
        None
    };
    if args.json {
        return print_json(&DemoSummary {
            store: store.url(),
            report,
            baseline,
            examples,
        });
    }
    print_report(&report);
    if let Some(baseline) = &baseline {
        crate::commands::baseline::print(baseline);
    }
    for example in &examples {
        println!("\nsounds like {} ({}):", example.track, example.genre);
        let mut t = table(["rank", "score", "artist - title", "genre"]);
        for n in &example.neighbours {
            t.add_row(vec![
                n["rank"].to_string(),
                format!("{:.3}", n["score"].as_f64().unwrap_or(0.0)),
                n["name"].as_str().unwrap_or("").to_owned(),
                n["genre"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        println!("{t}");
    }
    println!(
        "\nEverything is in {}: `deepcuts similar <track> --job {job_id} --store {}`.",
        store.url(),
        args.data_dir.display()
    );
    if args.no_serve {
        return Ok(());
    }
    let state = deepcuts_server::AppState {
        library: Arc::new(library),
        spectrograms: Arc::new(crate::commands::spectrogram::PreviewSpectrograms::default()),
    };
    let (addr, server) = deepcuts_server::serve(state, &args.listen, stop)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!("Listen at http://{addr}/ (Ctrl-C stops).");
    server.await??;
    drop(shop);
    Ok(())
}

/// Three tracks from different genres, with their five nearest neighbours.
fn examples(library: &deepcuts_server::Library) -> Vec<Example> {
    let mut seen_genres = Vec::new();
    let mut out = Vec::new();
    for track in library.tracks() {
        if out.len() == 3 {
            break;
        }
        if seen_genres.contains(&track.genre) {
            continue;
        }
        seen_genres.push(track.genre.clone());
        let neighbours = library
            .similar(&track.track_id, 5, false)
            .unwrap_or_default()
            .iter()
            .map(|n| {
                serde_json::json!({
                    "rank": n.rank,
                    "score": n.score,
                    "track_id": n.track.track_id,
                    "name": n.track.display_name(),
                    "genre": n.track.genre,
                })
            })
            .collect();
        out.push(Example {
            track: track.display_name(),
            genre: track.genre.clone(),
            neighbours,
        });
    }
    out
}

fn print_report(report: &JobReport) {
    let mut timings = table(["stage", "units", "done", "failed", "seconds"]);
    for s in &report.stages {
        timings.add_row(vec![
            s.stage.to_owned(),
            s.issued.to_string(),
            s.done.to_string(),
            s.failed.to_string(),
            s.seconds.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
        ]);
    }
    println!("{timings}");
    if !report.failures.is_empty() {
        let mut failures = table(["stage", "unit", "kind", "reason"]);
        for f in report.failures.iter().take(10) {
            failures.add_row(vec![
                f.stage.clone(),
                f.unit_id.clone(),
                f.kind.clone(),
                f.reason.clone(),
            ]);
        }
        println!("{failures}");
    }
    if let Some(metrics) = &report.model_metrics {
        match serde_json::from_value::<deepcuts_trainer::metrics::TrainReport>(metrics.clone()) {
            Ok(train) => {
                for t in train.tables() {
                    println!("{t}");
                }
            }
            Err(err) => eprintln!("the model report is unreadable: {err}"),
        }
    }
}
