//! A readable PNG of a track's spectrogram: viridis colours, a time axis in
//! seconds and a frequency axis in Hz.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use crate::frontend::{hz_to_mel, mel_to_hz, FrequencyScale, FrontendConfig, Spectrogram};

#[derive(Debug, thiserror::Error)]
#[error("rendering {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

/// The centre frequency (Hz) of row `bin`.
fn bin_hz(config: &FrontendConfig, bin: f64) -> f64 {
    match config.scale {
        FrequencyScale::Linear { .. } => bin * config.sample_rate as f64 / config.n_fft as f64,
        FrequencyScale::Mel {
            n_mels,
            fmin,
            fmax,
            htk,
            ..
        } => {
            let fmax = fmax.unwrap_or(config.sample_rate as f64 / 2.0);
            let (lo, hi) = (hz_to_mel(fmin, htk), hz_to_mel(fmax, htk));
            mel_to_hz(lo + (hi - lo) * (bin + 1.0) / (n_mels + 1) as f64, htk)
        }
    }
}

/// Writes `spectrogram` as a `width`×`height` PNG at `path`.
pub fn render_png(
    spectrogram: &Spectrogram,
    config: &FrontendConfig,
    title: &str,
    path: &Path,
    (width, height): (u32, u32),
) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let seconds = spectrogram.frames as f64 / config.frames_per_second();
    let bins = spectrogram.bins as f64;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..seconds, 0.0..bins)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("time (s)")
        .y_desc(match config.scale {
            FrequencyScale::Mel { .. } => "frequency (Hz, mel scale)",
            FrequencyScale::Linear { .. } => "frequency (Hz)",
        })
        .y_label_formatter(&|bin| {
            let hz = bin_hz(config, *bin);
            if hz >= 1000.0 {
                format!("{:.1}k", hz / 1000.0)
            } else {
                format!("{hz:.0}")
            }
        })
        .x_label_formatter(&|s| format!("{s:.0}"))
        .draw()
        .map_err(|e| err(&e))?;

    // Paint the image pixel by pixel in backend coordinates; each pixel takes
    // the loudest cell it covers, so short events survive downscaling.
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let (pw, ph) = (
        (xs.end - xs.start).max(1) as usize,
        (ys.end - ys.start).max(1) as usize,
    );
    let frames = spectrogram.frames.max(1);
    for px in 0..pw {
        let f0 = px * frames / pw;
        let f1 = ((px + 1) * frames / pw).max(f0 + 1).min(frames);
        for py in 0..ph {
            // Row 0 of the image is the top: the highest frequency.
            let b = (ph - 1 - py) * spectrogram.bins / ph;
            let value = (f0..f1)
                .map(|t| {
                    spectrogram
                        .values
                        .get(t * spectrogram.bins + b)
                        .copied()
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0);
            let colour = ViridisRGB::get_color(value as f32 / 255.0);
            root.draw_pixel((xs.start + px as i32, ys.start + py as i32), &colour)
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
