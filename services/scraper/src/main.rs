//! `deepcuts-scraper`: the crawl worker. Consumes `deepcuts.crawl`, writes catalogue
//! pages to the store and publishes transcode and next-page tasks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use deepcuts_core::config::{self, ServiceConfig};
use deepcuts_core::service::Service;
use deepcuts_core::telemetry;
use deepcuts_core::worker::run_worker;
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
    let service = Service::start(&config).await?;
    let handler = Arc::new(CrawlHandler::new(
        service.store.clone(),
        service.queue.clone(),
    ));
    let stats = run_worker(handler, service.worker_context(&config))
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
