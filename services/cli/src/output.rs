//! How commands print: a table for people, or JSON for scripts (`--json`).

use std::path::PathBuf;

use anyhow::Context;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

/// A table with the house style.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A progress bar for long work, hidden when stderr is not a terminal.
#[allow(dead_code)] // used by the pipeline commands
pub fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12.bold} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

/// Where a command reads and writes: the layered service config (defaults,
/// `--config` file, `DEEPCUTS__SECTION__KEY` variables), then these flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// TOML config file, as the services read it.
    #[arg(long, global = true, env = "DEEPCUTS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Store URL: a directory, file:///dir or s3://bucket/prefix.
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// Queue URL: memory:// or amqp://user:pass@host:port/vhost.
    #[arg(long, global = true)]
    pub queue: Option<String>,
}

impl Target {
    pub fn load(&self) -> anyhow::Result<deepcuts_core::config::ServiceConfig> {
        let mut config: deepcuts_core::config::ServiceConfig =
            deepcuts_core::config::load(self.config.as_deref()).context("loading configuration")?;
        if let Some(store) = &self.store {
            config.store.url = store.clone();
        }
        if let Some(queue) = &self.queue {
            config.queue.url = queue.clone();
        }
        Ok(config)
    }
}
