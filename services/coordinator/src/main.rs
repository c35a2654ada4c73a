//! `deepcuts-coordinator`: folds stage events into job state and issues each
//! stage's tasks. Run one replica. Its ops listener (`ops.listen`) also
//! serves the job API (`/api/jobs`, see `deepcuts_coordinator::api`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use deepcuts_coordinator::Coordinator;
use deepcuts_core::config::{NoSettings, ServiceConfig};
use deepcuts_core::service::Service;
use deepcuts_core::telemetry;

#[derive(Parser)]
#[command(name = "deepcuts-coordinator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume stage events until stopped (SIGTERM/Ctrl-C).
    Worker {
        /// TOML config file; `DEEPCUTS__SECTION__KEY` variables override it.
        #[arg(long, env = "DEEPCUTS_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Worker { config } = Cli::parse().command;
    let config: ServiceConfig<NoSettings> = deepcuts_core::config::load(config.as_deref())?;
    telemetry::init(&config.telemetry);
    let service = Service::open(&config).await?;
    let api = deepcuts_coordinator::api::router(service.store.clone(), service.queue.clone());
    service.serve_ops(&config, api).await?;
    Coordinator::new(service.store, service.queue)
        .run(service.shutdown)
        .await?;
    Ok(())
}
