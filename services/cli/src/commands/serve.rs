//! `deepcuts serve`: the HTTP API and listening page over one job's table.

use std::sync::Arc;

use anyhow::Context;
use deepcuts_server::{AppState, Library};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub target: crate::output::Target,
    /// Job whose catalogue and neighbour table to serve.
    #[arg(long)]
    pub job: String,
    /// Model whose table to serve (default: the job's only model).
    #[arg(long)]
    pub model: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.target.load()?;
    let store = deepcuts_core::storage::open_store_with(&config.store)
        .await
        .with_context(|| format!("opening store {}", config.store.url))?;
    let spinner =
        indicatif::ProgressBar::new_spinner().with_message(format!("loading job {}", args.job));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let library = Library::load(store.as_ref(), &args.job, args.model.as_deref()).await;
    spinner.finish_and_clear();
    let library = library?;
    tracing::info!(job_id = %library.job_id, model_id = %library.model_id, tracks = library.tracks().len(), k_max = library.k_max, "library loaded");
    let state = AppState {
        library: Arc::new(library),
        // Rendered from each track's preview on first request, then cached.
        spectrograms: Arc::new(crate::commands::spectrogram::PreviewSpectrograms::default()),
    };
    let stop = deepcuts_core::shutdown::install_signal_handlers();
    // Metrics and health for the orchestrator, on their own port as every service has.
    let readiness = deepcuts_core::ops_http::Readiness {
        store: Some(store.clone()),
        queue: None,
        draining: stop.clone(),
    };
    deepcuts_core::ops_http::serve(&config.ops.listen, readiness, stop.clone())
        .await
        .with_context(|| format!("ops endpoint on {}", config.ops.listen))?;
    let (addr, server) = deepcuts_server::serve(state, &args.listen, stop)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!("deepcuts is listening on http://{addr}/");
    server.await??;
    Ok(())
}
