//! `deepcuts crawl`: crawl a shop (or list a folder of audio files) into a job's
//! catalogue pages in the store, in this process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use comfy_table::Table;
use deepcuts_core::failures::{write_failure, FailureRecord};
use deepcuts_core::proto::Stage;
use deepcuts_core::storage::open_store;
use deepcuts_core::{keys, parquet_io};
use deepcuts_scraper::catalogue::to_batch;
use deepcuts_scraper::folder::{scan_folder, GenreSource};
use deepcuts_scraper::{CatalogueRow, CrawlFailure, CrawlSpec, Crawler, SiteProfile};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args, Debug)]
pub struct CrawlArgs {
    /// Listing URL to start from, or a folder of audio files (a path or file:// URL).
    pub url: String,
    /// Site profile: `juno` (built in) or a TOML file of CSS selectors.
    #[arg(long, default_value = "juno")]
    pub profile: String,
    /// Stop after this many listing pages.
    #[arg(long)]
    pub max_pages: Option<u32>,
    /// Stop after this many tracks.
    #[arg(long)]
    pub max_tracks: Option<u64>,
    /// Keep only these genres (comma-separated, e.g. `trance,drum-and-bass`).
    #[arg(long, value_delimiter = ',')]
    pub genres: Vec<String>,
    /// Requests per second to the shop; 0 turns the limit off.
    #[arg(long, default_value_t = 1.0)]
    pub rps: f64,
    /// Parallel requests per host.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    #[arg(long)]
    pub user_agent: Option<String>,
    /// Job id naming the output keys; made up from the time when absent.
    #[arg(long)]
    pub job: Option<String>,
    /// Where the catalogue goes: `file:///dir`, a directory, or `s3://bucket/prefix`.
    #[arg(long, env = "DEEPCUTS__STORE__URL")]
    pub store: String,
    /// Tracks per catalogue page for a folder source.
    #[arg(long, default_value_t = 100)]
    pub folder_page_size: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

struct Outcome {
    pages: Vec<Vec<CatalogueRow>>,
    failures: Vec<CrawlFailure>,
    duplicates: u64,
    elapsed: Duration,
}

fn folder_path(url: &str) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    let path = PathBuf::from(url);
    (!url.contains("://") && path.is_dir()).then_some(path)
}

async fn crawl_shop(
    args: &CrawlArgs,
    progress: &ProgressBar,
) -> anyhow::Result<(CrawlSpec, Outcome)> {
    let profile = SiteProfile::load(&args.profile)?;
    let mut spec = CrawlSpec::new(args.url.clone()).with_profile(&profile);
    spec.limits.max_pages = args.max_pages;
    spec.limits.max_tracks = args.max_tracks;
    spec.limits.genres = args.genres.clone();
    spec.politeness.requests_per_second = args.rps;
    spec.politeness.concurrency_per_host = args.concurrency;
    if let Some(agent) = &args.user_agent {
        spec.politeness.user_agent = agent.clone();
    }
    let crawler = Crawler::new(spec.clone())?;
    let mut pages = Vec::new();
    let mut tracks = 0usize;
    let report = crawler
        .run(|summary, rows| {
            tracks += rows.len();
            pages.push(rows.to_vec());
            progress.inc(1);
            progress.set_message(format!("{tracks} tracks, page {}", summary.page));
        })
        .await;
    Ok((
        spec,
        Outcome {
            pages,
            failures: report.failures,
            duplicates: report.duplicates,
            elapsed: report.elapsed,
        },
    ))
}

pub async fn run(args: CrawlArgs) -> anyhow::Result<()> {
    let store = open_store(&args.store).await.context("opening the store")?;
    let job = args
        .job
        .clone()
        .unwrap_or_else(|| format!("crawl-{}", deepcuts_core::now_unix_ms()));
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {pos} pages, {msg}",
        )?);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    };
    let started = Instant::now();
    let outcome = match folder_path(&args.url) {
        Some(folder) => {
            let scanned = tokio::task::spawn_blocking(move || {
                scan_folder(&folder, GenreSource::FolderThenTags)
            })
            .await
            .context("folder scan")??;
            let pages: Vec<Vec<CatalogueRow>> = scanned
                .pages(args.folder_page_size)
                .into_iter()
                .map(|(_, rows)| rows.to_vec())
                .collect();
            progress.inc(pages.len() as u64);
            Outcome {
                pages,
                failures: scanned.failures,
                duplicates: 0,
                elapsed: started.elapsed(),
            }
        }
        None => {
            let (spec, outcome) = crawl_shop(&args, &progress).await?;
            store
                .put(&keys::crawl_spec(&job), Bytes::from(spec.to_json()))
                .await
                .context("writing the crawl spec")?;
            outcome
        }
    };
    for (index, rows) in outcome.pages.iter().enumerate() {
        let key = keys::catalogue_page(&job, index as u32 + 1);
        parquet_io::write_batches(store.as_ref(), &key, &[to_batch(rows)?])
            .await
            .with_context(|| format!("writing {key}"))?;
    }
    for failure in &outcome.failures {
        let record = FailureRecord::new(
            &job,
            Stage::Crawl,
            &failure.unit_id,
            &failure.kind,
            &failure.reason,
        );
        write_failure(store.as_ref(), &record)
            .await
            .context("writing a failure record")?;
    }
    progress.finish_and_clear();

    let mut per_genre: BTreeMap<String, usize> = BTreeMap::new();
    for row in outcome.pages.iter().flatten() {
        *per_genre
            .entry(row.genre.clone().unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
    }
    let tracks: usize = per_genre.values().sum();
    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
    if args.json {
        let summary = serde_json::json!({
            "job_id": job,
            "pages": outcome.pages.len(),
            "tracks": tracks,
            "duplicates": outcome.duplicates,
            "tracks_per_genre": per_genre,
            "failures": outcome.failures,
            "elapsed_s": outcome.elapsed.as_secs_f64(),
            "pages_per_s": outcome.pages.len() as f64 / seconds,
            "tracks_per_s": tracks as f64 / seconds,
            "catalogue_prefix": keys::catalogue_prefix(&job),
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header(vec!["", "count"]);
    table.add_row(vec!["job".to_string(), job.clone()]);
    table.add_row(vec!["pages".to_string(), outcome.pages.len().to_string()]);
    table.add_row(vec!["tracks".to_string(), tracks.to_string()]);
    for (genre, count) in &per_genre {
        table.add_row(vec![format!("  {genre}"), count.to_string()]);
    }
    table.add_row(vec![
        "duplicates dropped".to_string(),
        outcome.duplicates.to_string(),
    ]);
    table.add_row(vec![
        "failures".to_string(),
        outcome.failures.len().to_string(),
    ]);
    table.add_row(vec![
        "elapsed".to_string(),
        format!("{:.2} s", outcome.elapsed.as_secs_f64()),
    ]);
    println!("{table}");
    if !outcome.failures.is_empty() {
        let mut failures = Table::new();
        failures.set_header(vec!["unit", "kind", "reason"]);
        for failure in &outcome.failures {
            failures.add_row(vec![
                failure.unit_id.clone(),
                failure.kind.clone(),
                failure.reason.clone(),
            ]);
        }
        println!("{failures}");
    }
    println!(
        "catalogue: {}{}",
        args.store.trim_end_matches('/'),
        format_args!("/{}", keys::catalogue_prefix(&job))
    );
    Ok(())
}
