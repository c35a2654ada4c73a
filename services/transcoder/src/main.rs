//! `deepcuts-transcoder`: the transcode worker, plus `windows` for benchmarks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use deepcuts_core::config::ServiceConfig;
use deepcuts_core::service::Service;
use deepcuts_core::telemetry;
use deepcuts_transcoder::{
    extension_hint, process_track, DecodeLimits, Frontend, FrontendConfig, TranscodeHandler,
    TranscoderSettings,
};

/// mimalloc keeps freed memory for reuse and backs large blocks with huge
/// pages: a two-minute track touches ~60 MB of fresh buffers, and with the
/// system allocator the page faults alone were ~10% of the run
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "deepcuts-transcoder", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume transcode tasks until stopped (SIGTERM/Ctrl-C drains).
    Worker {
        /// TOML config file; `DEEPCUTS__SECTION__KEY` variables override it.
        #[arg(long, env = "DEEPCUTS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Decode files and cut them into windows without writing anything
    /// (what the benchmark times); prints one line per file.
    Windows {
        /// Front-end preset: "default" or "seed".
        #[arg(long, default_value = "default")]
        frontend: String,
        /// Print per-stage wall times (decode, resample, spectrogram, windows).
        #[arg(long)]
        timings: bool,
        files: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker { config } => run_worker(config).await?,
        Command::Windows {
            frontend,
            timings,
            files,
        } => {
            let frontend = Frontend::new(FrontendConfig::preset(&frontend)?)?;
            let limits = DecodeLimits::default();
            if timings {
                for path in &files {
                    let data = std::fs::read(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let ext = extension_hint(&path.to_string_lossy());
                    print_timings(path, Bytes::from(data), ext.as_deref(), &frontend, &limits);
                }
            }
            // Files in parallel on all cores, as the worker does; lines in input order.
            use rayon::prelude::*;
            let lines: Vec<String> = files
                .par_iter()
                .map(|path| {
                    let ext = extension_hint(&path.to_string_lossy());
                    let result = std::fs::read(path)
                        .map_err(|e| e.to_string())
                        .and_then(|data| {
                            process_track(Bytes::from(data), ext.as_deref(), &frontend, &limits)
                                .map_err(|e| format!("error={}\t{e}", e.kind()))
                        });
                    match result {
                        Ok(out) => format!(
                            "{}\twindows={}\tduration_s={:.2}\tbad_packets={}",
                            path.display(),
                            out.windows.len(),
                            out.stats.duration_s,
                            out.stats.bad_packets
                        ),
                        Err(e) => format!("{}\t{e}", path.display()),
                    }
                })
                .collect();
            for line in lines {
                println!("{line}");
            }
        }
    }
    Ok(())
}

fn print_timings(
    path: &std::path::Path,
    data: Bytes,
    ext: Option<&str>,
    frontend: &Frontend,
    limits: &DecodeLimits,
) {
    use std::time::Instant;
    let t0 = Instant::now();
    let decoded = match deepcuts_transcoder::decode_mono(data, ext, limits) {
        Ok(d) => d,
        Err(err) => {
            eprintln!("{}\ttimings unavailable: {err}", path.display());
            return;
        }
    };
    let t1 = Instant::now();
    let rate = decoded.sample_rate;
    let samples =
        deepcuts_transcoder::resample_mono(decoded.samples, rate, frontend.config().sample_rate);
    let t2 = Instant::now();
    let Ok(samples) = samples else { return };
    let spectrogram = frontend.spectrogram(&samples);
    let t3 = Instant::now();
    let windows = frontend.windows(&spectrogram);
    let t4 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    eprintln!(
        "{}\tdecode_ms={:.1}\tresample_ms={:.1}\tspectrogram_ms={:.1}\twindows_ms={:.1}\twindows={}",
        path.display(),
        ms(t0, t1),
        ms(t1, t2),
        ms(t2, t3),
        ms(t3, t4),
        windows.len()
    );
}

async fn run_worker(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config: ServiceConfig<TranscoderSettings> = deepcuts_core::config::load(config.as_deref())?;
    telemetry::init(&config.telemetry);
    let service = Service::start(&config).await?;
    let ctx = service.worker_context(&config);
    let handler = Arc::new(TranscodeHandler::new(service.store, config.settings)?);
    deepcuts_core::worker::run_worker(handler, ctx).await?;
    Ok(())
}
