//! `deepcuts-indexer`: builds exact top-k neighbour tables.

use std::path::PathBuf;
use std::time::Instant;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use deepcuts_core::config::ServiceConfig;
use deepcuts_core::service::Service;
use deepcuts_core::worker::run_worker;
use deepcuts_indexer::job::{build_table, BuildProgress};
use deepcuts_indexer::worker::{IndexWorker, IndexerSettings};
use deepcuts_indexer::{npy, CpuKernel, EmbeddingMatrix, IndexParams};

#[derive(Parser)]
#[command(name = "deepcuts-indexer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume `deepcuts.index`: one task is one row block of a job's table.
    Worker {
        /// TOML config file; `DEEPCUTS__SECTION__KEY` variables override it.
        #[arg(long, env = "DEEPCUTS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Build a job's whole table in this process (using the symmetry of
    /// the scores) and write it as the block files the workers would write.
    Build(BuildArgs),
    /// Build the table of a `.npy` matrix of embeddings (one row per track)
    /// and write neighbour rows and scores as `.npy` (benchmarks, comparisons).
    Table(TableArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    #[arg(long, env = "DEEPCUTS__STORE__URL", default_value = "./deepcuts-data")]
    store: String,
    #[arg(long)]
    job: String,
    #[arg(long)]
    model: String,
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Row blocks to write (as many as the block tasks would use).
    #[arg(long, default_value_t = 1)]
    blocks: u32,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args)]
struct TableArgs {
    /// N × d little-endian f32 `.npy` file.
    #[arg(long)]
    embeddings: PathBuf,
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Rows per tile.
    #[arg(long, default_value_t = deepcuts_indexer::DEFAULT_TILE_ROWS)]
    tile_rows: usize,
    /// Compute only this block (a shard), of `--blocks`.
    #[arg(long, requires = "blocks")]
    block: Option<usize>,
    #[arg(long)]
    blocks: Option<usize>,
    /// Output: N × k neighbour rows (`<u4`).
    #[arg(long)]
    ids_out: Option<PathBuf>,
    /// Output: N × k scores (`<f4`).
    #[arg(long)]
    scores_out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker { config } => {
            let config: ServiceConfig<IndexerSettings> =
                deepcuts_core::config::load(config.as_deref())?;
            deepcuts_core::telemetry::init(&config.telemetry);
            tokio::runtime::Runtime::new()?.block_on(worker(config))
        }
        Command::Build(args) => {
            init_plain_logs();
            tokio::runtime::Runtime::new()?.block_on(build(args))
        }
        Command::Table(args) => {
            init_plain_logs();
            table(args)
        }
    }
}

fn init_plain_logs() {
    deepcuts_core::telemetry::init(&Default::default());
}

async fn worker(config: ServiceConfig<IndexerSettings>) -> anyhow::Result<()> {
    let service = Service::start(&config).await?;
    let ctx = service.worker_context(&config);
    let handler = Arc::new(IndexWorker::new(service.store, config.settings));
    run_worker(handler, ctx).await?;
    Ok(())
}

/// Shows the single-process build's tile pairs on a progress bar.
struct Bar(indicatif::ProgressBar);

impl BuildProgress for Bar {
    fn start(&self, total_pairs: u64) {
        self.0.set_length(total_pairs);
    }

    fn advance(&self, pairs: u64) {
        self.0.inc(pairs);
    }
}

async fn build(args: BuildArgs) -> anyhow::Result<()> {
    let store = deepcuts_core::storage::open_store(&args.store).await?;
    let mut params = IndexParams::new(args.k);
    if let Some(threads) = args.threads {
        params.threads = threads;
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tile pairs, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    tracing::info!(job_id = %args.job, model_id = %args.model, k = args.k, blocks = args.blocks, "building table");
    let report = build_table(
        store.as_ref(),
        &args.job,
        &args.model,
        &params,
        args.blocks,
        Arc::new(Bar(bar.clone())),
    )
    .await?;
    bar.finish_and_clear();
    tracing::info!(job_id = %args.job, model_id = %args.model, tracks = report.tracks, near_duplicates = report.near_duplicates, rejected = report.rejected, seconds = report.seconds, "table written");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn table(args: TableArgs) -> anyhow::Result<()> {
    let load_started = Instant::now();
    let raw = npy::read_f32_matrix(&args.embeddings)?;
    let matrix = EmbeddingMatrix::from_raw(raw.data, raw.cols)
        .with_context(|| format!("embeddings in {}", args.embeddings.display()))?;
    let load_s = load_started.elapsed().as_secs_f64();
    let mut params = IndexParams::new(args.k);
    params.tile_rows = args.tile_rows;
    if let Some(threads) = args.threads {
        params.threads = threads;
    }
    tracing::info!(
        rows = matrix.rows(),
        dim = matrix.dim(),
        k = params.k,
        threads = params.threads,
        "building table"
    );
    let started = Instant::now();
    let table = match (args.block, args.blocks) {
        (Some(block), Some(blocks)) => {
            deepcuts_indexer::block_table(&matrix, &params, block, blocks, &CpuKernel, &|_| {})?
        }
        _ => deepcuts_indexer::full_table(&matrix, &params, &CpuKernel, &|_| {})?,
    };
    let search_s = started.elapsed().as_secs_f64();
    if let Some(path) = &args.ids_out {
        npy::write_matrix(path, table.rows(), table.k, &table.ids)?;
    }
    if let Some(path) = &args.scores_out {
        npy::write_matrix(path, table.rows(), table.k, &table.scores)?;
    }
    println!(
        "{{\"rows\": {}, \"dim\": {}, \"k\": {}, \"threads\": {}, \"near_duplicates\": {}, \"load_s\": {load_s:.3}, \"search_s\": {search_s:.3}}}",
        matrix.rows(),
        matrix.dim(),
        table.k,
        params.threads,
        table.near_duplicates.len()
    );
    Ok(())
}
