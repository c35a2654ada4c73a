//! `deepcuts similar`: the tracks that sound most like one track.

use anyhow::Context;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use deepcuts_server::Library;

#[derive(clap::Args, Debug)]
pub struct SimilarArgs {
    /// A track id, or "artist - title" (the best search match is used).
    pub track: String,
    /// How many neighbours to show.
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub k: u16,
    /// At most one track per release and per artist.
    #[arg(long)]
    pub diverse: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: crate::output::Target,
    /// Job whose catalogue and neighbour table to read.
    #[arg(long)]
    pub job: String,
    /// Model whose table to read (default: the job's only model).
    #[arg(long)]
    pub model: Option<String>,
}

pub async fn run(args: SimilarArgs) -> anyhow::Result<()> {
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
    let track = match library.track(&args.track) {
        Some(track) => track,
        None => *library
            .search(&args.track, 1)
            .first()
            .with_context(|| format!("no track in job {} matches {:?}", args.job, args.track))?,
    };
    let neighbours = library
        .similar(&track.track_id, usize::from(args.k), args.diverse)
        .unwrap_or_default();
    if args.json {
        let rows: Vec<serde_json::Value> = neighbours
            .iter()
            .map(|n| serde_json::json!({ "rank": n.rank, "score": n.score, "track": n.track }))
            .collect();
        let body = serde_json::json!({
            "job_id": library.job_id,
            "model_id": library.model_id,
            "track": track,
            "diverse": args.diverse,
            "neighbours": rows,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    println!(
        "{} ({}, model {})",
        track.display_name(),
        track.track_id,
        library.model_id
    );
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["rank", "score", "artist", "title", "genre", "preview"]);
    for n in &neighbours {
        table.add_row(vec![
            Cell::new(n.rank).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.4}", n.score)).set_alignment(CellAlignment::Right),
            Cell::new(&n.track.artist),
            Cell::new(&n.track.track_name),
            Cell::new(&n.track.genre),
            Cell::new(&n.track.preview_url),
        ]);
    }
    println!("{table}");
    if neighbours.len() < usize::from(args.k) {
        eprintln!(
            "only {} of {} neighbours: the table stores {} per track{}",
            neighbours.len(),
            args.k,
            library.k_max,
            if args.diverse {
                " and --diverse skips repeats"
            } else {
                ""
            }
        );
    }
    Ok(())
}
