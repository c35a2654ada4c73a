//! `deepcuts spectrogram`: a PNG of one track's log-mel spectrogram.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use deepcuts_transcoder::plot::render_png;
use deepcuts_transcoder::{
    extension_hint, process_track, DecodeLimits, FetchConfig, Fetcher, Frontend, FrontendConfig,
};

#[derive(clap::Args, Debug)]
pub struct SpectrogramArgs {
    /// An audio file, or an http(s):// or file:// URL.
    pub input: String,
    /// Where to write the PNG.
    #[arg(short, long, default_value = "spectrogram.png")]
    pub output: PathBuf,
    /// Front-end preset: "default" (log-mel) or "seed" (linear, the original's).
    #[arg(long, default_value = "default")]
    pub frontend: String,
    #[arg(long, default_value_t = 1400)]
    pub width: u32,
    #[arg(long, default_value_t = 500)]
    pub height: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: SpectrogramArgs) -> anyhow::Result<()> {
    let config = FrontendConfig::preset(&args.frontend)?;
    let is_url = ["http://", "https://", "file://"]
        .iter()
        .any(|p| args.input.starts_with(p));
    let data = if is_url {
        let fetcher = Fetcher::new(FetchConfig::default())?;
        fetcher.fetch(&args.input).await?.data
    } else {
        let bytes = tokio::fs::read(&args.input)
            .await
            .with_context(|| format!("reading {}", args.input))?;
        Bytes::from(bytes)
    };
    let input = args.input.clone();
    let output = args.output.clone();
    let (width, height) = (args.width, args.height);
    let track = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let frontend = Frontend::new(config)?;
        let ext = extension_hint(&input);
        let track = process_track(data, ext.as_deref(), &frontend, &DecodeLimits::default())
            .with_context(|| format!("decoding {input}"))?;
        let name = input.rsplit('/').next().unwrap_or(&input);
        let title = format!("{name} · {} preset", frontend.config().preset);
        render_png(
            &track.spectrogram,
            frontend.config(),
            &title,
            &output,
            (width, height),
        )?;
        Ok(track)
    })
    .await??;
    let stats = &track.stats;
    if args.json {
        crate::output::print_json(&serde_json::json!({
            "input": args.input,
            "output": args.output,
            "stats": stats,
        }))?;
    } else {
        let mut table = crate::output::table([
            "input",
            "duration (s)",
            "windows",
            "bad packets",
            "codec",
            "png",
        ]);
        table.add_row([
            args.input.clone(),
            format!("{:.2}", stats.duration_s),
            stats.windows.to_string(),
            stats.bad_packets.to_string(),
            format!(
                "{} {} Hz ×{}",
                stats.codec, stats.source_sample_rate, stats.source_channels
            ),
            args.output.display().to_string(),
        ]);
        println!("{table}");
    }
    Ok(())
}

/// The listening page's spectrogram images: each track's preview fetched,
/// analysed with the default front-end and rendered once, then kept.
#[derive(Default)]
pub struct PreviewSpectrograms {
    rendered: tokio::sync::Mutex<std::collections::HashMap<String, Bytes>>,
}

#[async_trait::async_trait]
impl deepcuts_server::SpectrogramSource for PreviewSpectrograms {
    async fn spectrogram_png(
        &self,
        track: &deepcuts_server::Track,
    ) -> Result<Option<Bytes>, String> {
        if let Some(png) = self.rendered.lock().await.get(&track.track_id) {
            return Ok(Some(png.clone()));
        }
        let fetcher = Fetcher::new(FetchConfig::default()).map_err(|e| e.to_string())?;
        let data = fetcher
            .fetch(&track.preview_url)
            .await
            .map_err(|e| e.to_string())?
            .data;
        let url = track.preview_url.clone();
        let title = track.display_name();
        let png = tokio::task::spawn_blocking(move || -> Result<Bytes, String> {
            let frontend =
                Frontend::new(FrontendConfig::preset("default").map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            let ext = extension_hint(&url);
            let analysed = process_track(data, ext.as_deref(), &frontend, &DecodeLimits::default())
                .map_err(|e| e.to_string())?;
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let path = dir.path().join("spectrogram.png");
            render_png(
                &analysed.spectrogram,
                frontend.config(),
                &title,
                &path,
                (900, 320),
            )
            .map_err(|e| e.to_string())?;
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        self.rendered
            .lock()
            .await
            .insert(track.track_id.clone(), png.clone());
        Ok(Some(png))
    }
}
