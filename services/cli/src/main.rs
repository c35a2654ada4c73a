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
    /// symphonia warns once per undecodable frame (a preview cut from a
    /// longer file starts mid bit-reservoir); the transcoder counts those.
    #[arg(
        long,
        global = true,
        default_value = "warn,symphonia=error",
        env = "DEEPCUTS_LOG"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The static-timbre baseline on a job's holdout (what the CNN must beat).
    Baseline(commands::baseline::BaselineArgs),
    /// Crawl a shop's catalogue into a store.
    Crawl(commands::crawl::CrawlArgs),
    /// Run the pipeline on a simulated shop, on embedded defaults.
    Demo(commands::demo::DemoArgs),
    /// Check that a store and a queue work end to end.
    Doctor(commands::doctor::DoctorArgs),
    /// Submit, follow and cancel jobs run by the coordinator.
    Job(commands::job::JobArgs),
    /// Write a PNG of a track's log-mel spectrogram.
    Spectrogram(commands::spectrogram::SpectrogramArgs),
    /// Train a model on a job's windows in this process.
    Train(commands::train::TrainArgs),
    /// Tracks that sound like a given track.
    Similar(commands::similar::SimilarArgs),
    /// Serve the query API and the listening page.
    Serve(commands::serve::ServeArgs),
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
        Command::Baseline(args) => commands::baseline::run(args).await,
        Command::Crawl(args) => commands::crawl::run(args).await,
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Doctor(args) => commands::doctor::run(args).await,
        Command::Job(args) => commands::job::run(args).await,
        Command::Spectrogram(args) => commands::spectrogram::run(args).await,
        Command::Train(args) => commands::train::run(args).await,
        Command::Similar(args) => commands::similar::run(args).await,
        Command::Serve(args) => commands::serve::run(args).await,
        Command::Store(args) => commands::store::run(args).await,
    }
}
