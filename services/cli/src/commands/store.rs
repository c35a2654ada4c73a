//! `deepcuts store ls|cat`: look at the artefacts a job wrote, on any backend.

use anyhow::Context;
use clap::{Args, Subcommand};
use deepcuts_core::storage::open_store_with;
use serde::Serialize;

use crate::output::{print_json, table};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    target: crate::output::Target,
    #[command(subcommand)]
    action: StoreAction,
}

#[derive(Debug, Subcommand)]
enum StoreAction {
    /// List keys under a prefix, with sizes.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        json: bool,
    },
    /// Print one object to stdout.
    Cat { key: String },
}

#[derive(Debug, Serialize)]
struct Listed {
    key: String,
    bytes: u64,
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let config = args.target.load()?;
    let store = open_store_with(&config.store)
        .await
        .with_context(|| format!("opening store {}", config.store.url))?;
    match args.action {
        StoreAction::Ls { prefix, json } => {
            let mut listed = Vec::new();
            for key in store.list(&prefix).await? {
                let bytes = store.get(&key).await.map(|b| b.len() as u64).unwrap_or(0);
                listed.push(Listed { key, bytes });
            }
            if json {
                return print_json(&listed);
            }
            let mut out = table(["key", "bytes"]);
            for item in &listed {
                out.add_row(vec![item.key.clone(), item.bytes.to_string()]);
            }
            println!(
                "{out}\n{} objects under {:?} in {}",
                listed.len(),
                prefix,
                store.url()
            );
        }
        StoreAction::Cat { key } => {
            use std::io::Write;
            let data = store.get(&key).await?;
            std::io::stdout().write_all(&data)?;
        }
    }
    Ok(())
}
