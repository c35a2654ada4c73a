//! `deepcuts train`: trains a model on a job's windows in this process, with a
//! progress bar per epoch, and prints the report. Ctrl-C checkpoints where the
//! run is; the same command again resumes from there.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use deepcuts_trainer::config::TrainConfig;
use deepcuts_trainer::metrics::EpochMetrics;
use deepcuts_trainer::train::{train, Observer, TrainRequest};
use deepcuts_trainer::{Architecture, BlockingStore, Objective, TrainError};
use indicatif::ProgressBar;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Job whose windows and catalogue are the training data.
    #[arg(long)]
    pub job: String,
    /// Network: `default` (log-mel CNN) or `seed` (the 2017 network).
    #[arg(long, default_value = "default", value_parser = ["default", "seed"])]
    pub model: String,
    /// `genre` (cross-entropy on the shop's genres) or `contrastive` (label-free).
    #[arg(long, default_value = "genre", value_parser = ["genre", "contrastive"])]
    pub objective: String,
    /// Names `models/<id>/`; defaults to `<job>-<model>-<objective>`.
    #[arg(long)]
    pub model_id: Option<String>,
    /// JSON file with hyper-parameters (any subset of the trainer config).
    #[arg(long)]
    pub train_config: Option<PathBuf>,
    /// Overrides the number of epochs.
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: crate::output::Target,
}

/// Drives one progress bar per epoch from the training thread.
struct Bars {
    bar: Option<ProgressBar>,
    epochs: u32,
    steps_per_epoch: u64,
}

impl Bars {
    fn start_epoch(&mut self, epoch: u32, step: u64) {
        let bar = crate::output::progress_bar(
            self.steps_per_epoch,
            &format!("epoch {}/{}", epoch + 1, self.epochs),
        );
        bar.set_position(step);
        self.bar = Some(bar);
    }
}

impl Observer for Bars {
    fn on_start(&mut self, epoch: u32, epochs: u32, steps_per_epoch: u64) {
        self.epochs = epochs;
        self.steps_per_epoch = steps_per_epoch;
        if epoch < epochs {
            self.start_epoch(epoch, 0);
        }
    }

    fn on_step(&mut self, epoch: u32, step: u64, loss: f64) {
        if self.bar.is_none() {
            self.start_epoch(epoch, step);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.4}"));
        }
    }

    fn on_epoch(&mut self, m: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let track = m
            .val_track_accuracy
            .map_or_else(|| "-".to_owned(), |a| format!("{:.1}%", 100.0 * a));
        eprintln!(
            "epoch {:>3}  train loss {:.4}  val loss {:.4}{}  val window acc {:.1}%  val track acc {track}  {:.0} windows/s",
            m.epoch,
            m.train_loss,
            m.val_loss,
            if m.improved { " *" } else { "  " },
            100.0 * m.val_window_accuracy,
            m.windows_per_second
        );
    }
}

pub async fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = args.target.load()?;
    let store = deepcuts_core::storage::open_store_with(&config.store)
        .await
        .with_context(|| format!("opening store {}", config.store.url))?;
    let mut train_config = match &args.train_config {
        Some(path) => TrainConfig::from_json(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?,
        None => TrainConfig::default(),
    };
    if let Some(epochs) = args.epochs {
        train_config.epochs = epochs;
    }
    let request = TrainRequest {
        job_id: args.job.clone(),
        model_id: args
            .model_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}-{}", args.job, args.model, args.objective)),
        architecture: Architecture::parse(&args.model)?,
        objective: Objective::parse(&args.objective)?,
        data_job_ids: vec![args.job.clone()],
        config: train_config,
    };

    let cancel = Arc::new(AtomicBool::new(false));
    let on_ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping after this step; run the same command again to resume");
                cancel.store(true, Ordering::SeqCst);
            }
        })
    };
    let store = BlockingStore::new(store, tokio::runtime::Handle::current());
    let run = request.clone();
    let flag = cancel.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut bars = Bars {
            bar: None,
            epochs: 0,
            steps_per_epoch: 0,
        };
        let outcome = train(&store, &run, &mut bars, &flag);
        if let Some(bar) = bars.bar.take() {
            bar.finish_and_clear();
        }
        outcome
    })
    .await
    .context("the training thread failed")?;
    on_ctrl_c.abort();
    let outcome = match outcome {
        Err(TrainError::Cancelled) => anyhow::bail!(
            "training of {} stopped at a checkpoint; run the same command to resume",
            request.model_id
        ),
        other => other.with_context(|| format!("training {}", request.model_id))?,
    };
    if outcome.already_done {
        eprintln!(
            "model {} was already trained; showing its report",
            request.model_id
        );
    } else if let Some((epoch, step)) = outcome.resumed_from {
        eprintln!(
            "resumed from the checkpoint at epoch {} step {step}",
            epoch + 1
        );
    }
    if args.json {
        crate::output::print_json(&outcome.report)?;
    } else {
        for table in outcome.report.tables() {
            println!("{table}");
        }
        println!(
            "model written to {}",
            deepcuts_core::keys::model_dir(&request.model_id)
        );
    }
    Ok(())
}
