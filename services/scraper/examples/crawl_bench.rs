//! Crawl throughput against the in-process shop simulator with politeness off.
//!
//! Runs, in one process and on the same shop: (1) the scraper's full crawl (fetch,
//! robots, parse, normalise), and (2) curl fetching the same listing pages
//! sequentially over one keep-alive connection, without parsing, as the reference
//! for raw fetch speed. Prints pages/s and tracks/s and the ratio.
//!
//! `cargo run --release -p deepcuts-scraper --example crawl_bench -- [tracks] [releases_per_page]`

use std::process::Command;
use std::time::Instant;

use deepcuts_scraper::{CrawlSpec, Crawler};
use deepcuts_shopsim::{CatalogueConfig, ShopConfig, Template};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tracks: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let per_page: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let shop = deepcuts_shopsim::start(
        ShopConfig {
            catalogue: CatalogueConfig {
                tracks,
                ..CatalogueConfig::default()
            },
            releases_per_page: per_page,
            ..ShopConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let pages = shop.truth().pages;

    let spec = CrawlSpec::new(shop.start_url()).impolite();
    let crawler = Crawler::new(spec)?;
    let started = Instant::now();
    let report = crawler.run(|_, _| {}).await;
    let crawl_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.rows.len() == tracks,
        "crawl found {} of {tracks} tracks",
        report.rows.len()
    );
    anyhow::ensure!(
        report.pages.len() == pages,
        "crawl read {} of {pages} pages",
        report.pages.len()
    );

    let urls: Vec<String> = (1..=pages)
        .map(|p| shop.url(&Template::Juno.page_path(p)))
        .collect();
    let mut curl = Command::new("curl");
    for (i, url) in urls.iter().enumerate() {
        if i > 0 {
            curl.arg("--next");
        }
        curl.args(["--silent", "--fail", "--output", "/dev/null", url]);
    }
    let curl_task = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let status = curl.status();
        (status, started.elapsed().as_secs_f64())
    });
    let (status, curl_s) = curl_task.await?;
    anyhow::ensure!(status?.success(), "curl failed");

    println!("catalogue: {tracks} tracks on {pages} pages ({per_page} releases/page)");
    println!("| tool | seconds | pages/s | tracks/s |");
    println!("|---|---|---|---|");
    println!(
        "| deepcuts crawl (fetch + parse) | {crawl_s:.3} | {:.0} | {:.0} |",
        pages as f64 / crawl_s,
        tracks as f64 / crawl_s
    );
    println!(
        "| curl, same pages, fetch only | {curl_s:.3} | {:.0} | {:.0} |",
        pages as f64 / curl_s,
        tracks as f64 / curl_s
    );
    println!(
        "ratio (deepcuts pages/s ÷ curl pages/s): {:.2}",
        curl_s / crawl_s
    );
    Ok(())
}
