use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use deepcuts_shopsim::{CatalogueConfig, Faults, Genre, ShopConfig, Template};

/// A synthetic music shop on loopback for deepcuts' tests, benchmarks and demo.
#[derive(Parser, Debug)]
#[command(name = "deepcuts-shopsim", version)]
struct Args {
    #[arg(long, env = "SHOPSIM_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// 0 picks a free port; the chosen address is printed.
    #[arg(long, env = "SHOPSIM_PORT", default_value_t = 8088)]
    port: u16,
    #[arg(long, env = "SHOPSIM_SEED", default_value_t = 2017)]
    seed: u64,
    /// Total tracks, spread evenly over the genres.
    #[arg(long, env = "SHOPSIM_TRACKS", default_value_t = 540)]
    tracks: usize,
    /// Comma-separated genre slugs; all nine when empty.
    #[arg(long, env = "SHOPSIM_GENRES", value_delimiter = ',')]
    genres: Vec<String>,
    /// `juno` (the 2017 markup) or `table`.
    #[arg(long, env = "SHOPSIM_TEMPLATE", default_value = "juno")]
    template: String,
    #[arg(long, env = "SHOPSIM_RELEASES_PER_PAGE", default_value_t = 20)]
    releases_per_page: usize,
    #[arg(long, env = "SHOPSIM_PREVIEW_SECONDS", default_value_t = 120.0)]
    preview_seconds: f32,
    /// Keeps encoded previews on disk between runs.
    #[arg(long, env = "SHOPSIM_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Adds `Crawl-delay` to robots.txt.
    #[arg(long)]
    crawl_delay: Option<f64>,
    /// Fraction of requests answered 500/503/429.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fraction of requests that hang.
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Listing pages to serve malformed, comma-separated.
    #[arg(long, value_delimiter = ',')]
    malformed_pages: Vec<usize>,
    #[arg(long, default_value_t = 0.0)]
    truncated_preview_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    corrupt_preview_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    missing_preview_rate: f64,
    /// Writes the ground truth as JSON to this file and exits.
    #[arg(long)]
    dump_truth: Option<PathBuf>,
}

fn parse_template(name: &str) -> anyhow::Result<Template> {
    match name {
        "juno" => Ok(Template::Juno),
        "table" => Ok(Template::Table),
        other => anyhow::bail!("unknown template {other:?}; use juno or table"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let genres = args
        .genres
        .iter()
        .filter(|g| !g.trim().is_empty())
        .map(|g| Genre::from_slug(g).with_context(|| format!("unknown genre {g:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = ShopConfig {
        catalogue: CatalogueConfig {
            seed: args.seed,
            tracks: args.tracks,
            genres,
            truncated_preview_rate: args.truncated_preview_rate,
            corrupt_preview_rate: args.corrupt_preview_rate,
            missing_preview_rate: args.missing_preview_rate,
        },
        template: parse_template(&args.template)?,
        releases_per_page: args.releases_per_page,
        preview_seconds: args.preview_seconds,
        preview_cache_dir: args.cache_dir,
        crawl_delay_s: args.crawl_delay,
        faults: Faults {
            error_rate: args.error_rate,
            hang_rate: args.hang_rate,
            latency: Duration::from_millis(args.latency_ms),
            malformed_pages: args.malformed_pages,
            ..Faults::default()
        },
    };
    if let Some(dir) = &config.preview_cache_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Some(path) = args.dump_truth {
        let truth = serde_json::to_vec_pretty(&deepcuts_shopsim::server::ground_truth(&config)?)?;
        std::fs::write(&path, truth).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote ground truth to {}", path.display());
        return Ok(());
    }
    let shop = deepcuts_shopsim::start(config, SocketAddr::new(args.bind, args.port)).await?;
    println!("shop listening on {}", shop.base_url());
    println!("start url: {}", shop.start_url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    shop.shutdown();
    Ok(())
}
