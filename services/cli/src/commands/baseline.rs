//! `deepcuts baseline`: the static-timbre baseline (per-band mean and
//! standard deviation, nearest centroid and logistic regression) on a job's
//! holdout, the figure the CNN has to beat.

use anyhow::Context;
use deepcuts_trainer::baseline::{run_baseline, BaselineReport};
use deepcuts_trainer::config::TrainConfig;
use deepcuts_trainer::data::IndexOptions;
use deepcuts_trainer::BlockingStore;

#[derive(clap::Args, Debug)]
pub struct BaselineArgs {
    /// Job whose windows and catalogue are the data.
    #[arg(long)]
    pub job: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: crate::output::Target,
}

/// Runs the baseline with the trainer's default split and classes, so its
/// holdout is the CNN's.
pub async fn compute(
    store: deepcuts_core::storage::Store,
    job_id: &str,
) -> anyhow::Result<BaselineReport> {
    let config = TrainConfig::default();
    let options = IndexOptions {
        fractions: config.fractions,
        bands: config.bands,
        frames: config.frames,
        genres: config.genres.clone(),
        min_tracks_per_genre: config.min_tracks_per_genre,
    };
    let store = BlockingStore::new(store, tokio::runtime::Handle::current());
    let jobs = vec![job_id.to_owned()];
    let report = tokio::task::spawn_blocking(move || run_baseline(&store, &jobs, &options))
        .await
        .context("the baseline thread failed")??;
    Ok(report)
}

pub fn print(report: &BaselineReport) {
    println!(
        "baseline on {} holdout tracks ({} train; {} features: per-band mean and std)",
        report.holdout_tracks, report.train_tracks, report.features
    );
    let mut t =
        crate::output::table(["genre", "tracks", "nearest centroid", "logistic regression"]);
    for (i, (genre, tracks, correct)) in report.nearest_centroid.per_genre.iter().enumerate() {
        let lr = &report.logistic_regression.per_genre[i];
        let pct = |c: u32| format!("{:.1}%", 100.0 * f64::from(c) / f64::from((*tracks).max(1)));
        t.add_row(vec![
            genre.clone(),
            tracks.to_string(),
            pct(*correct),
            pct(lr.2),
        ]);
    }
    t.add_row(vec![
        "all".to_owned(),
        report.holdout_tracks.to_string(),
        format!("{:.1}%", 100.0 * report.nearest_centroid.track_accuracy),
        format!("{:.1}%", 100.0 * report.logistic_regression.track_accuracy),
    ]);
    println!("{t}");
}

pub async fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let config = args.target.load()?;
    let store = deepcuts_core::storage::open_store_with(&config.store)
        .await
        .with_context(|| format!("opening store {}", config.store.url))?;
    let report = compute(store, &args.job).await?;
    if args.json {
        crate::output::print_json(&report)?;
    } else {
        print(&report);
    }
    Ok(())
}
