//! `deepcuts-scraper`: the crawl worker. Consumes `deepcuts.crawl`, writes catalogue
//! pages to the store and publishes transcode and next-page tasks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use deepcuts_core::config::{self, ServiceConfig};
use deepcuts_core::ops_http::{self, Readiness};
use deepcuts_core::queue::open_queue;
use deepcuts_core::storage::open_store_with;
use deepcuts_core::worker::{run_worker, WorkerContext};
use deepcuts_core::{shutdown, telemetry};
use deepcuts_scraper::worker::CrawlHandler;

#[derive(Parser, Debug)]
#[command(name = "deepcuts-scraper", version, about)]
struct Args {
    /// `worker` (the default, for symmetry with the other stages' binaries).
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML); `DEEPCUTS__SECTION__KEY` variables override it.
    #[arg(long, env = "DEEPCUTS_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume crawl tasks until stopped (SIGTERM/Ctrl-C drains).
    Worker,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: ServiceConfig = config::load(args.config.as_deref()).context("loading config")?;
    telemetry::init(&config.telemetry);
    let stop = shutdown::install_signal_handlers();
    let store = open_store_with(&config.store)
        .await
        .context("opening the store")?;
    let queue = open_queue(&config.queue)
        .await
        .context("opening the queue")?;
    ops_http::serve(
        &config.ops.listen,
        Readiness {
            store: Some(store.clone()),
            queue: Some(queue.clone()),
            draining: stop.clone(),
        },
        stop.clone(),
    )
    .await
    .context("starting the ops endpoint")?;
    let handler = Arc::new(CrawlHandler::new(store.clone(), queue.clone()));
    let stats = run_worker(
        handler,
        WorkerContext {
            queue,
            store,
            config: config.worker.clone(),
            delivery_limit: config.queue.delivery_limit,
            shutdown: stop,
        },
    )
    .await
    .context("crawl worker")?;
    tracing::info!(
        done = stats.done,
        failed = stats.failed,
        requeued = stats.requeued,
        "scraper exiting"
    );
    Ok(())
}
