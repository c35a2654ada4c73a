//! `deepcuts-embedder`: the embed worker (`worker`), or every part of a job
//! embedded straight from the command line (`run`; part numbers follow the
//! sorted spectrogram keys).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use deepcuts_core::config::ServiceConfig;
use deepcuts_core::service::Service;
use deepcuts_core::storage::open_store;
use deepcuts_core::telemetry;
use deepcuts_embedder::{embed_part, EmbedHandler, EmbedRequest, EmbedderSettings};
use deepcuts_model::artifact::load_model;
use deepcuts_model::store::BlockingStore;

#[derive(Parser)]
#[command(
    name = "deepcuts-embedder",
    version,
    about = "Embed spectrogram windows with a trained deepcuts model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume embed tasks until stopped (SIGTERM/Ctrl-C drains).
    Worker {
        /// TOML config file; `DEEPCUTS__SECTION__KEY` variables override it.
        #[arg(long, env = "DEEPCUTS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Embed every spectrogram part of a job now.
    Run {
        /// Storage URL (file:///dir or s3://bucket/prefix).
        #[arg(long, env = "DEEPCUTS_STORE")]
        store: String,
        #[arg(long)]
        job: String,
        #[arg(long)]
        model_id: String,
        /// Windows per forward pass.
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// libtorch CPU threads (0 = libtorch's default).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Stay on the CPU even when CUDA is present.
        #[arg(long)]
        cpu: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Worker { config } => runtime.block_on(run_worker(config)),
        Command::Run {
            store,
            job,
            model_id,
            batch_size,
            threads,
            cpu,
        } => {
            telemetry::init(&Default::default());
            if threads > 0 {
                tch::set_num_threads(threads as i32);
            }
            let store = runtime
                .block_on(open_store(&store))
                .context("opening the store")?;
            let store = BlockingStore::new(store, runtime.handle().clone());
            let device = if cpu {
                tch::Device::Cpu
            } else {
                tch::Device::cuda_if_available()
            };
            let model = load_model(&store, &model_id, device)?;
            let parts: Vec<String> = store
                .list(&deepcuts_core::keys::spectrograms_prefix(&job))?
                .into_iter()
                .filter(|k| k.ends_with(".parquet"))
                .collect();
            let (mut windows, mut seconds) = (0usize, 0f64);
            for (part, key) in parts.iter().enumerate() {
                let request = EmbedRequest {
                    job_id: job.clone(),
                    model_id: model_id.clone(),
                    spectrogram_key: key.clone(),
                    part: part as u32,
                    batch_size,
                };
                let outcome = embed_part(&store, &model, &request)?;
                windows += outcome.windows;
                seconds += outcome.seconds;
                println!(
                    "{}\t{} tracks\t{} windows\t{:.1} windows/s",
                    outcome.key,
                    outcome.tracks,
                    outcome.windows,
                    outcome.windows as f64 / outcome.seconds.max(1e-9)
                );
            }
            println!(
                "total\t{} parts\t{windows} windows\t{:.1} windows/s\tdevice={device:?}",
                parts.len(),
                windows as f64 / seconds.max(1e-9)
            );
            Ok(())
        }
    }
}

async fn run_worker(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config: ServiceConfig<EmbedderSettings> = deepcuts_core::config::load(config.as_deref())?;
    telemetry::init(&config.telemetry);
    let service = Service::start(&config).await?;
    let ctx = service.worker_context(&config);
    let handler = Arc::new(EmbedHandler::new(service.store, config.settings));
    deepcuts_core::worker::run_worker(handler, ctx).await?;
    Ok(())
}
