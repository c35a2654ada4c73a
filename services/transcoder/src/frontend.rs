//! The spectrogram front-end: STFT → (mel) power → dB → u8, cut into windows.
//!
//! The default preset matches `librosa.feature.melspectrogram` with librosa's
//! defaults (periodic Hann window, centred frames padded with zeros, Slaney
//! mel scale and Slaney area normalisation), so the numbers can be checked
//! against the reference implementation (see `tests/mel_parity.rs`).

use std::sync::Arc;

use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use crate::error::TranscodeError;

/// Analysis window applied to each frame before the FFT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowFunction {
    /// Periodic Hann (`scipy.signal.get_window("hann", n, fftbins=True)`).
    Hann,
}

/// How the signal is extended at both ends when frames are centred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// Zeros; librosa's default since 0.10 (`pad_mode="constant"`).
    Constant,
    /// Mirror without repeating the edge sample (`numpy.pad(mode="reflect")`).
    Reflect,
}

/// Area normalisation of the mel filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MelNorm {
    /// Each triangle scaled by 2 / (its width in Hz): librosa's `norm="slaney"`.
    Slaney,
    /// Peak of every triangle is 1.
    None,
}

/// The frequency axis of the spectrogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrequencyScale {
    /// Triangular mel filters over the power spectrum.
    Mel {
        n_mels: usize,
        fmin: f64,
        /// Upper edge; `None` is the Nyquist frequency.
        fmax: Option<f64>,
        /// HTK mel formula instead of Slaney's (librosa `htk=True`).
        htk: bool,
        norm: MelNorm,
    },
    /// The lowest `bins` FFT bins, unchanged.
    Linear { bins: usize },
}

/// Everything that determines the numbers in a window. It is recorded (as
/// JSON) with every artefact, so a reader never guesses the geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    /// Preset this config started from ("default", "seed"), for humans.
    pub preset: String,
    /// Audio is resampled to this rate before analysis.
    pub sample_rate: u32,
    pub n_fft: usize,
    /// Samples between frames; `sample_rate / hop_length` frames per second.
    pub hop_length: usize,
    pub window: WindowFunction,
    /// Frame t is centred on sample `t * hop_length`.
    pub center: bool,
    pub pad_mode: PadMode,
    pub scale: FrequencyScale,
    /// Power floor before taking the log (librosa `amin`).
    pub amin: f32,
    /// Dynamic range kept below the track's loudest bin, in dB.
    pub top_db: f32,
    /// Frames per window (the CNN's input width).
    pub window_frames: usize,
    /// Frames between the starts of consecutive windows.
    pub window_hop_frames: usize,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            preset: "default".to_string(),
            sample_rate: 22_050,
            n_fft: 2048,
            hop_length: 441,
            window: WindowFunction::Hann,
            center: true,
            pad_mode: PadMode::Constant,
            scale: FrequencyScale::Mel {
                n_mels: 128,
                fmin: 0.0,
                fmax: None,
                htk: false,
                norm: MelNorm::Slaney,
            },
            amin: 1e-10,
            top_db: 80.0,
            window_frames: 256,
            window_hop_frames: 256,
        }
    }
}

/// How to turn a stored u8 back into dB: `db = min_db + value * step_db`,
/// relative to the track's loudest bin (whose absolute level is `ref_db`
/// in the track summary).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DbScale {
    pub min_db: f32,
    pub step_db: f32,
}

impl FrontendConfig {
    /// The 2017 project's geometry: sox's linear spectrogram at the file's
    /// 44.1 kHz, 50 columns/s, a 598-point DFT (sox `-Y 300` gives 300 bins)
    /// of which the lowest 256 rows are kept (0–18.8 kHz; MP3 encoders cut
    /// above that anyway), sox's 120 dB default range, 256×256 windows.
    pub fn seed() -> Self {
        FrontendConfig {
            preset: "seed".to_string(),
            sample_rate: 44_100,
            n_fft: 598,
            hop_length: 882,
            scale: FrequencyScale::Linear { bins: 256 },
            top_db: 120.0,
            ..FrontendConfig::default()
        }
    }

    /// Looks a preset up by name; an empty name is the default.
    pub fn preset(name: &str) -> Result<Self, TranscodeError> {
        match name {
            "" | "default" => Ok(FrontendConfig::default()),
            "seed" => Ok(FrontendConfig::seed()),
            other => Err(TranscodeError::Config(format!(
                "unknown front-end preset {other:?} (expected \"default\" or \"seed\")"
            ))),
        }
    }

    /// Number of rows (frequency bins) per frame.
    pub fn n_bins(&self) -> usize {
        match self.scale {
            FrequencyScale::Mel { n_mels, .. } => n_mels,
            FrequencyScale::Linear { bins } => bins,
        }
    }

    pub fn frames_per_second(&self) -> f64 {
        self.sample_rate as f64 / self.hop_length as f64
    }

    pub fn window_seconds(&self) -> f64 {
        self.window_frames as f64 / self.frames_per_second()
    }

    /// Bytes in one stored window.
    pub fn window_bytes(&self) -> usize {
        self.n_bins() * self.window_frames
    }

    pub fn db_scale(&self) -> DbScale {
        DbScale {
            min_db: -self.top_db,
            step_db: self.top_db / 255.0,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), TranscodeError> {
        let bad = |msg: String| Err(TranscodeError::Config(msg));
        if self.sample_rate < 1000 || self.sample_rate > 384_000 {
            return bad(format!("sample_rate {} out of range", self.sample_rate));
        }
        if self.n_fft < 16 || self.n_fft > 1 << 16 {
            return bad(format!("n_fft {} out of range", self.n_fft));
        }
        if self.hop_length == 0 || self.window_frames == 0 || self.window_hop_frames == 0 {
            return bad("hop_length, window_frames and window_hop_frames must be > 0".into());
        }
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !positive(self.top_db) || !positive(self.amin) {
            return bad("top_db and amin must be positive".into());
        }
        let spectrum_bins = self.n_fft / 2 + 1;
        match self.scale {
            FrequencyScale::Linear { bins } if bins == 0 || bins > spectrum_bins => {
                bad(format!("linear bins {bins} must be in 1..={spectrum_bins}"))
            }
            FrequencyScale::Mel {
                n_mels, fmin, fmax, ..
            } => {
                let nyquist = self.sample_rate as f64 / 2.0;
                let fmax = fmax.unwrap_or(nyquist);
                if n_mels == 0 || !(0.0..fmax).contains(&fmin) || fmax > nyquist {
                    bad(format!(
                        "mel: need n_mels > 0 and 0 <= fmin < fmax <= {nyquist}"
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// Hz → mel; Slaney's scale is linear below 1 kHz and logarithmic above.
pub fn hz_to_mel(hz: f64, htk: bool) -> f64 {
    if htk {
        return 2595.0 * (1.0 + hz / 700.0).log10();
    }
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

pub fn mel_to_hz(mel: f64, htk: bool) -> f64 {
    if htk {
        return 700.0 * (10f64.powf(mel / 2595.0) - 1.0);
    }
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// One triangular filter, stored sparsely: weights for bins `start..start+len`.
#[derive(Debug, Clone)]
struct Filter {
    start: usize,
    weights: Vec<f32>,
}

/// Builds the mel filterbank the way `librosa.filters.mel` does.
fn mel_filters(
    sample_rate: u32,
    n_fft: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
    htk: bool,
    norm: MelNorm,
) -> Vec<Filter> {
    let spectrum_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..spectrum_bins)
        .map(|k| k as f64 * sample_rate as f64 / n_fft as f64)
        .collect();
    let (mel_lo, mel_hi) = (hz_to_mel(fmin, htk), hz_to_mel(fmax, htk));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| {
            mel_to_hz(
                mel_lo + (mel_hi - mel_lo) * i as f64 / (n_mels + 1) as f64,
                htk,
            )
        })
        .collect();
    (0..n_mels)
        .map(|m| {
            let (lo, mid, hi) = (edges[m], edges[m + 1], edges[m + 2]);
            let scale = match norm {
                MelNorm::Slaney => 2.0 / (hi - lo),
                MelNorm::None => 1.0,
            };
            let dense: Vec<f64> = fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - lo) / (mid - lo);
                    let upper = (hi - f) / (hi - mid);
                    lower.min(upper).max(0.0) * scale
                })
                .collect();
            let start = dense.iter().position(|&w| w > 0.0).unwrap_or(0);
            let end = dense
                .iter()
                .rposition(|&w| w > 0.0)
                .map(|e| e + 1)
                .unwrap_or(start);
            Filter {
                start,
                weights: dense[start..end].iter().map(|&w| w as f32).collect(),
            }
        })
        .collect()
}

/// A planned front-end: FFT plan, window and filterbank built once and
/// shared by every track (it is `Send + Sync`; scratch space is per call).
pub struct Frontend {
    config: FrontendConfig,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    filters: Option<Vec<Filter>>,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A whole track's spectrogram, quantised.
#[derive(Debug, Clone)]
pub struct Spectrogram {
    pub frames: usize,
    pub bins: usize,
    /// Time-major: frame `t`, bin `b` at `t * bins + b`.
    pub values: Vec<u8>,
    /// Absolute level of the loudest bin, `10 log10(max power)`; u8 0..=255
    /// spans `ref_db - top_db ..= ref_db`.
    pub ref_db: f32,
}

/// One fixed-size slice of a spectrogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub index: u32,
    pub start_frame: usize,
    pub start_s: f64,
    /// Frequency-major image: `bins` rows (lowest frequency first) of
    /// `window_frames` columns; bin `b`, frame `t` at `b * window_frames + t`.
    pub data: Vec<u8>,
}

/// Dot product over the common length, with eight running sums so the
/// compiler can keep them in vector registers (a single `sum()` is one
/// serial chain of additions).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Frames per rayon task: enough work to amortise the scratch buffers.
const FRAMES_PER_TASK: usize = 128;

impl Frontend {
    pub fn new(config: FrontendConfig) -> Result<Self, TranscodeError> {
        config.validate()?;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(config.n_fft);
        let n = config.n_fft;
        let window = match config.window {
            WindowFunction::Hann => (0..n)
                .map(|i| {
                    (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32
                })
                .collect(),
        };
        let filters = match config.scale {
            FrequencyScale::Mel {
                n_mels,
                fmin,
                fmax,
                htk,
                norm,
            } => Some(mel_filters(
                config.sample_rate,
                config.n_fft,
                n_mels,
                fmin,
                fmax.unwrap_or(config.sample_rate as f64 / 2.0),
                htk,
                norm,
            )),
            FrequencyScale::Linear { .. } => None,
        };
        Ok(Frontend {
            config,
            fft,
            window,
            filters,
        })
    }

    pub fn config(&self) -> &FrontendConfig {
        &self.config
    }

    /// Number of STFT frames for `len` samples.
    pub fn frame_count(&self, len: usize) -> usize {
        let hop = self.config.hop_length;
        if self.config.center {
            1 + len / hop
        } else if len >= self.config.n_fft {
            1 + (len - self.config.n_fft) / hop
        } else {
            0
        }
    }

    /// Copies frame `t` (before windowing) into `out`, applying the padding.
    fn fill_frame(&self, samples: &[f32], t: usize, out: &mut [f32]) {
        let n = self.config.n_fft;
        let offset = if self.config.center { n / 2 } else { 0 };
        let start = (t * self.config.hop_length) as isize - offset as isize;
        let len = samples.len() as isize;
        if start >= 0 && start + n as isize <= len {
            out.copy_from_slice(&samples[start as usize..start as usize + n]);
            return;
        }
        for (i, o) in out.iter_mut().enumerate() {
            let mut idx = start + i as isize;
            *o = match self.config.pad_mode {
                PadMode::Constant => {
                    if (0..len).contains(&idx) {
                        samples[idx as usize]
                    } else {
                        0.0
                    }
                }
                PadMode::Reflect => {
                    if len == 1 {
                        samples[0]
                    } else {
                        // Fold the index back into range (numpy "reflect").
                        let period = 2 * (len - 1);
                        idx = idx.rem_euclid(period);
                        if idx >= len {
                            idx = period - idx;
                        }
                        samples[idx as usize]
                    }
                }
            };
        }
    }

    /// Power spectrogram on the configured frequency axis, time-major
    /// (`frames × n_bins`). This is what the parity test compares.
    pub fn power(&self, samples: &[f32]) -> Vec<f32> {
        let bins = self.config.n_bins();
        let frames = self.frame_count(samples.len());
        let mut out = vec![0.0f32; frames * bins];
        out.par_chunks_mut(FRAMES_PER_TASK * bins)
            .enumerate()
            .for_each(|(chunk, rows)| {
                let mut frame = self.fft.make_input_vec();
                let mut spectrum = self.fft.make_output_vec();
                let mut scratch = self.fft.make_scratch_vec();
                let mut power = vec![0.0f32; spectrum.len()];
                for (i, row) in rows.chunks_mut(bins).enumerate() {
                    let t = chunk * FRAMES_PER_TASK + i;
                    self.fill_frame(samples, t, &mut frame);
                    frame
                        .iter_mut()
                        .zip(&self.window)
                        .for_each(|(x, w)| *x *= *w);
                    // Lengths come from the plan itself, so this cannot fail.
                    let _ = self
                        .fft
                        .process_with_scratch(&mut frame, &mut spectrum, &mut scratch);
                    power
                        .iter_mut()
                        .zip(&spectrum)
                        .for_each(|(p, c)| *p = c.re * c.re + c.im * c.im);
                    match &self.filters {
                        Some(filters) => {
                            for (value, filter) in row.iter_mut().zip(filters) {
                                *value = dot(&filter.weights, &power[filter.start..]);
                            }
                        }
                        None => row.copy_from_slice(&power[..bins]),
                    }
                }
            });
        out
    }

    /// Log-power spectrogram, clipped to `top_db` below its maximum and
    /// quantised to u8.
    pub fn spectrogram(&self, samples: &[f32]) -> Spectrogram {
        let power = self.power(samples);
        let amin = self.config.amin;
        let max_power = power.iter().fold(amin, |m, &p| m.max(p));
        let ref_db = 10.0 * max_power.log10();
        let top_db = self.config.top_db;
        let scale = 255.0 / top_db;
        let values = power
            .par_iter()
            .with_min_len(4096)
            .map(|&p| {
                let db = 10.0 * p.max(amin).log10() - ref_db;
                ((db + top_db) * scale).round().clamp(0.0, 255.0) as u8
            })
            .collect();
        Spectrogram {
            frames: self.frame_count(samples.len()),
            bins: self.config.n_bins(),
            values,
            ref_db,
        }
    }

    /// Cuts a spectrogram into full windows; a tail shorter than one window
    /// is dropped, as the original did.
    pub fn windows(&self, spectrogram: &Spectrogram) -> Vec<Window> {
        let width = self.config.window_frames;
        let hop = self.config.window_hop_frames;
        let bins = spectrogram.bins;
        if spectrogram.frames < width {
            return Vec::new();
        }
        let count = 1 + (spectrogram.frames - width) / hop;
        (0..count)
            .map(|w| {
                let start_frame = w * hop;
                let mut data = vec![0u8; bins * width];
                for t in 0..width {
                    let column = &spectrogram.values[(start_frame + t) * bins..][..bins];
                    for (b, &v) in column.iter().enumerate() {
                        data[b * width + t] = v;
                    }
                }
                Window {
                    index: w as u32,
                    start_frame,
                    start_s: start_frame as f64 / self.config.frames_per_second(),
                    data,
                }
            })
            .collect()
    }
}
