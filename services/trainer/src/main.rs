//! `deepcuts-trainer`: the train worker (`worker`), or one training run
//! straight from the command line (`run`). Both resume from the model's last
//! checkpoint when there is one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use deepcuts_core::config::ServiceConfig;
use deepcuts_core::service::Service;
use deepcuts_core::storage::open_store;
use deepcuts_core::{shutdown, telemetry};
use deepcuts_trainer::bench::{train_throughput, BenchSpec};
use deepcuts_trainer::config::TrainConfig;
use deepcuts_trainer::train::{train, Silent, TrainRequest};
use deepcuts_trainer::worker::{TrainHandler, TrainerSettings};
use deepcuts_trainer::{Architecture, BlockingStore, Objective};

#[derive(Parser)]
#[command(
    name = "deepcuts-trainer",
    version,
    about = "Train deepcuts models from spectrogram windows in storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume train tasks until stopped (SIGTERM/Ctrl-C checkpoints and drains).
    Worker {
        /// TOML config file; `DEEPCUTS__SECTION__KEY` variables override it.
        #[arg(long, env = "DEEPCUTS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Train one model now and print its report.
    Run(RunArgs),
    /// Time training steps on synthetic windows (see scripts/bench-trainer.sh).
    Bench {
        /// Network: seed or default.
        #[arg(long, default_value = "seed")]
        model: String,
        #[arg(long, default_value_t = 256)]
        bands: usize,
        #[arg(long, default_value_t = 256)]
        frames: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value_t = 9)]
        classes: usize,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// libtorch CPU threads (0 = libtorch's default).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Stay on the CPU even when CUDA is present.
        #[arg(long)]
        cpu: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Storage URL (file:///dir or s3://bucket/prefix).
    #[arg(long, env = "DEEPCUTS_STORE")]
    store: String,
    /// Job whose windows and catalogue are the data.
    #[arg(long)]
    job: String,
    /// Model id (names models/<id>/); defaults to <job>-<model>-<objective>.
    #[arg(long)]
    model_id: Option<String>,
    /// Network: default or seed.
    #[arg(long, default_value = "default")]
    model: String,
    /// Objective: genre or contrastive.
    #[arg(long, default_value = "genre")]
    objective: String,
    /// JSON file with hyper-parameters (any subset of the trainer config).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Worker { config } => runtime.block_on(run_worker(config)),
        Command::Run(args) => run_once(&runtime, args),
        Command::Bench {
            model,
            bands,
            frames,
            batch_size,
            classes,
            warmup,
            steps,
            threads,
            cpu,
        } => {
            if threads > 0 {
                tch::set_num_threads(threads as i32);
            }
            let device = if cpu {
                tch::Device::Cpu
            } else {
                tch::Device::cuda_if_available()
            };
            let spec = BenchSpec {
                architecture: Architecture::parse(&model)?,
                bands,
                frames,
                batch_size,
                classes,
                warmup_steps: warmup,
                steps,
                seed: 17,
            };
            let result = train_throughput(&spec, device)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
    }
}

async fn run_worker(config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config: ServiceConfig<TrainerSettings> =
        deepcuts_core::config::load(config.as_deref())?;
    telemetry::init(&config.telemetry);
    // An unacked prefetched task would sit behind a training run for hours and
    // hit the broker's consumer timeout: take one task at a time per slot.
    let concurrency = config.worker.concurrency.max(1);
    if usize::from(config.worker.prefetch) != concurrency {
        tracing::info!(
            prefetch = config.worker.prefetch,
            concurrency,
            "trainer prefetch set to its concurrency"
        );
        config.worker.prefetch = concurrency as u16;
    }
    let service = Service::start(&config).await?;
    let ctx = service.worker_context(&config);
    let handler = Arc::new(TrainHandler::new(
        service.store,
        service.queue,
        config.settings,
        service.shutdown,
    ));
    deepcuts_core::worker::run_worker(handler, ctx).await?;
    Ok(())
}

fn run_once(runtime: &tokio::runtime::Runtime, args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(&Default::default());
    let cancel = Arc::new(AtomicBool::new(false));
    let store = runtime.block_on(async {
        // First signal: checkpoint at the current step and stop.
        let token = shutdown::install_signal_handlers();
        let flag = cancel.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            flag.store(true, Ordering::SeqCst);
        });
        open_store(&args.store).await
    });
    let store = BlockingStore::new(
        store.context("opening the store")?,
        runtime.handle().clone(),
    );
    let config = match &args.config {
        Some(path) => TrainConfig::from_json(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?,
        None => TrainConfig::default(),
    };
    let request = TrainRequest {
        job_id: args.job.clone(),
        model_id: args
            .model_id
            .unwrap_or_else(|| format!("{}-{}-{}", args.job, args.model, args.objective)),
        architecture: Architecture::parse(&args.model)?,
        objective: Objective::parse(&args.objective)?,
        data_job_ids: vec![args.job],
        config,
    };
    let outcome = train(&store, &request, &mut Silent, &cancel)?;
    for table in outcome.report.tables() {
        println!("{table}");
    }
    Ok(())
}
