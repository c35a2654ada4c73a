//! `deepcuts`: the user's command line. Each subcommand lives in its own file
//! under `commands/`; this file only parses arguments, sets up logging and
//! dispatches.

mod commands;
mod output;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "deepcuts",
    version,
    about = "Content-based \"sounds like this\" recommendations for a music shop's back catalogue"
)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. "info" or "deepcuts_scraper=debug".
    #[arg(long, global = true, default_value = "warn", env = "DEEPCUTS_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that a store and a queue work end to end.
    Doctor(commands::doctor::DoctorArgs),
    /// List or print artefacts in a store.
    Store(commands::store::StoreArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    deepcuts_core::telemetry::init(&deepcuts_core::telemetry::TelemetryConfig {
        filter: cli.log.clone(),
        ..Default::default()
    });
    match cli.command {
        Command::Doctor(args) => commands::doctor::run(args).await,
        Command::Store(args) => commands::store::run(args).await,
    }
}
