//! `deepcuts-coordinator`: folds stage events into job state and issues each
//! stage's tasks. Run one replica. Its ops listener (`ops.listen`) also
//! serves the job API (`/api/jobs`, see `deepcuts_coordinator::api`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use deepcuts_coordinator::Coordinator;
use deepcuts_core::config::{NoSettings, ServiceConfig};
use deepcuts_core::ops_http::{self, Readiness};
use deepcuts_core::queue::open_queue;
use deepcuts_core::storage::open_store_with;
use deepcuts_core::{shutdown, telemetry};

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
    let stop = shutdown::install_signal_handlers();
    let store = open_store_with(&config.store).await?;
    let queue = open_queue(&config.queue).await?;
    let readiness = Readiness {
        store: Some(store.clone()),
        queue: Some(queue.clone()),
        draining: stop.clone(),
    };
    let api = deepcuts_coordinator::api::router(store.clone(), queue.clone());
    ops_http::serve_with(&config.ops.listen, readiness, api, stop.clone()).await?;
    Coordinator::new(store, queue).run(stop).await?;
    Ok(())
}
