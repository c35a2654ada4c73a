//! `deepcuts job ...`: submit a job to a running coordinator's store and
//! queue, and follow it. The coordinator (`deepcuts-coordinator worker`)
//! does the stage work; these commands only read and write `jobs/<job>/`
//! (and the coordinator's request markers) and publish the job's first
//! crawl task. The same commands are on the coordinator's HTTP API
//! (`deepcuts_coordinator::api`).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use deepcuts_coordinator::{
    job_report, list_jobs, load_job, request_cancel, request_retry_failed, IndexChoice, JobReport,
    JobSpec, JobSummary, ModelChoice, RetrySummary,
};
use deepcuts_scraper::{CrawlSpec, SiteProfile};

use crate::output::{print_json, progress_bar, table, Target};

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    target: Target,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Submit a catalogue crawl and everything after it.
    Submit(Box<SubmitArgs>),
    /// One job's report.
    Status { job_id: String },
    /// Live progress bars per stage until the job ends.
    Watch { job_id: String },
    /// Every job in the store.
    List,
    /// Stop a job (workers finish the units they hold).
    Cancel { job_id: String },
    /// Issue a job's failed units again (a failed job resumes at the earliest
    /// stage retried); the coordinator applies it within a few seconds.
    RetryFailed { job_id: String },
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// Start URL of the shop's catalogue.
    url: String,
    /// Job id (letters, digits, - _ . =).
    #[arg(long)]
    job: String,
    /// `juno` (built in) or a TOML profile file of CSS selectors.
    #[arg(long, default_value = "juno")]
    profile: String,
    #[arg(long)]
    max_pages: Option<u32>,
    #[arg(long)]
    max_tracks: Option<u64>,
    /// Keep only these genres (repeatable).
    #[arg(long = "genre")]
    genres: Vec<String>,
    /// No rate limit or crawl delay (only for shops you run yourself).
    #[arg(long)]
    impolite: bool,
    /// `default` or `seed`.
    #[arg(long, default_value = "default", value_parser = ["default", "seed"])]
    model: String,
    /// `genre` or `contrastive`.
    #[arg(long, default_value = "genre", value_parser = ["genre", "contrastive"])]
    objective: String,
    /// Embed with this trained model instead of training one.
    #[arg(long)]
    reuse_model: Option<String>,
    /// JSON file of trainer hyper-parameters.
    #[arg(long)]
    train_config: Option<std::path::PathBuf>,
    /// Neighbours per track.
    #[arg(short, default_value_t = 10)]
    k: u32,
    /// Index blocks (0: one per 25,000 tracks).
    #[arg(long, default_value_t = 0)]
    blocks: u32,
}

fn crawl_spec(args: &SubmitArgs) -> anyhow::Result<CrawlSpec> {
    let profile = SiteProfile::load(&args.profile)
        .with_context(|| format!("loading profile {}", args.profile))?;
    let mut spec = CrawlSpec::new(args.url.clone()).with_profile(&profile);
    if args.impolite {
        spec = spec.impolite();
    }
    if let Some(pages) = args.max_pages {
        spec.limits.max_pages = Some(pages);
    }
    if let Some(tracks) = args.max_tracks {
        spec.limits.max_tracks = Some(tracks);
    }
    spec.limits.genres = args.genres.clone();
    Ok(spec)
}

pub async fn run(args: JobArgs) -> anyhow::Result<()> {
    let config = args.target.load()?;
    let store = deepcuts_core::storage::open_store_with(&config.store)
        .await
        .with_context(|| format!("opening store {}", config.store.url))?;
    match &args.command {
        JobCommand::Submit(submit) => {
            let queue = deepcuts_core::queue::open_queue(&config.queue)
                .await
                .with_context(|| format!("opening queue {}", config.queue.url))?;
            let train_config = match &submit.train_config {
                Some(path) => Some(serde_json::from_slice(
                    &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                )?),
                None => None,
            };
            let spec = JobSpec {
                job_id: submit.job.clone(),
                crawl: crawl_spec(submit)?,
                model: ModelChoice {
                    architecture: submit.model.clone(),
                    objective: submit.objective.clone(),
                    reuse_model_id: submit.reuse_model.clone(),
                    model_id: None,
                    train_config,
                },
                index: IndexChoice {
                    k: submit.k,
                    blocks: submit.blocks,
                    ..IndexChoice::default()
                },
            };
            let job = deepcuts_coordinator::submit(&store, &queue, spec).await?;
            if args.json {
                print_json(
                    &serde_json::json!({"job_id": job.job_id(), "status": job.status.as_str(), "model_id": job.model_id}),
                )?;
            } else {
                println!(
                    "submitted job {} (model {}); follow it with `deepcuts job watch {}`",
                    job.job_id(),
                    job.model_id,
                    job.job_id()
                );
            }
        }
        JobCommand::Status { job_id } => {
            let job = load_job(&store, job_id)
                .await?
                .with_context(|| format!("no job {job_id}"))?;
            let report = job_report(&store, &job).await?;
            if args.json {
                print_json(&report)?;
            } else {
                print_report(&report);
            }
        }
        JobCommand::Watch { job_id } => {
            let multi = indicatif::MultiProgress::new();
            let mut bars = Vec::new();
            let report = loop {
                let job = load_job(&store, job_id)
                    .await?
                    .with_context(|| format!("no job {job_id}"))?;
                let report = job_report(&store, &job).await?;
                if bars.is_empty() && !args.json {
                    bars = report
                        .stages
                        .iter()
                        .map(|s| multi.add(progress_bar(0, s.stage)))
                        .collect();
                }
                for (bar, stage) in bars.iter().zip(&report.stages) {
                    bar.set_length(stage.issued as u64);
                    bar.set_position((stage.done + stage.failed) as u64);
                    bar.set_message(if stage.failed > 0 {
                        format!("{} failed", stage.failed)
                    } else {
                        String::new()
                    });
                }
                if job.status.is_terminal() {
                    break report;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            for bar in bars {
                bar.finish_and_clear();
            }
            if args.json {
                print_json(&report)?;
            } else {
                print_report(&report);
            }
        }
        JobCommand::List => {
            let jobs = list_jobs(&store).await?;
            if args.json {
                let rows: Vec<JobSummary> = jobs.iter().map(JobSummary::from).collect();
                print_json(&rows)?;
            } else {
                let mut t = table(["job", "status", "model", "error"]);
                for j in &jobs {
                    t.add_row(vec![
                        j.job_id().to_owned(),
                        j.status.as_str().to_owned(),
                        j.model_id.clone(),
                        j.error.clone().unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            }
        }
        JobCommand::Cancel { job_id } => {
            request_cancel(&store, job_id).await?;
            if args.json {
                print_json(&serde_json::json!({"job_id": job_id, "cancel_requested": true}))?;
            } else {
                println!(
                    "cancel requested for job {job_id}; the coordinator applies it within a few seconds"
                );
            }
        }
        JobCommand::RetryFailed { job_id } => {
            let summary = request_retry_failed(&store, job_id).await?;
            if args.json {
                print_json(&summary)?;
            } else {
                print_retry(&summary);
            }
        }
    }
    Ok(())
}

fn print_retry(summary: &RetrySummary) {
    if summary.units.is_empty() {
        println!(
            "job {} ({}): no failed unit to retry",
            summary.job_id,
            summary.status.as_str()
        );
    } else {
        println!(
            "job {}: retry of {} failed unit(s) requested; it goes from {} to {} within a few seconds",
            summary.job_id,
            summary.units.len(),
            summary.status.as_str(),
            summary.resume_status.as_str()
        );
    }
    if summary.units.is_empty() && summary.skipped.is_empty() {
        return;
    }
    let mut t = table(["stage", "unit", "action"]);
    for u in &summary.units {
        t.add_row(vec![u.stage.clone(), u.unit_id.clone(), "retry".to_owned()]);
    }
    for u in &summary.skipped {
        t.add_row(vec![
            u.stage.clone(),
            u.unit_id.clone(),
            format!("skipped: {}", u.reason),
        ]);
    }
    println!("{t}");
}

pub fn print_report(report: &JobReport) {
    println!(
        "job {}: {} (model {}), {:.1} s{}",
        report.job_id,
        report.status,
        report.model_id,
        report.elapsed_seconds,
        report
            .error
            .as_deref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default()
    );
    let mut t = table([
        "stage", "units", "done", "failed", "pending", "seconds", "units/s", "eta s",
    ]);
    for s in &report.stages {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        t.add_row(vec![
            s.stage.to_owned(),
            s.issued.to_string(),
            s.done.to_string(),
            s.failed.to_string(),
            s.pending.to_string(),
            opt(s.seconds),
            opt(s.units_per_second),
            opt(s.eta_seconds),
        ]);
    }
    println!("{t}");
    if !report.failures.is_empty() {
        let mut f = table(["stage", "unit", "kind", "reason"]);
        for r in &report.failures {
            f.add_row(vec![
                r.stage.clone(),
                r.unit_id.clone(),
                r.kind.clone(),
                r.reason.clone(),
            ]);
        }
        println!("{f}");
    }
}
