//! One track end to end: bytes → mono samples → spectrogram → windows.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::decode::{decode_mono, resample_mono, DecodeLimits};
use crate::error::TranscodeError;
use crate::frontend::{Frontend, Spectrogram, Window};

/// What the per-track summary records about a decoded track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackStats {
    /// Decoded duration in seconds (after gapless trimming).
    pub duration_s: f64,
    pub source_sample_rate: u32,
    pub source_channels: u32,
    pub codec: String,
    pub packets: u64,
    pub bad_packets: u64,
    /// Absolute dB of the loudest bin (see [`crate::frontend::DbScale`]).
    pub ref_db: f32,
    pub windows: u32,
}

/// A decoded, analysed track.
#[derive(Debug, Clone)]
pub struct TrackOutput {
    pub stats: TrackStats,
    pub spectrogram: Spectrogram,
    pub windows: Vec<Window>,
}

/// Decodes `data` and resamples it to the front-end's rate.
pub fn decode_for_frontend(
    data: Bytes,
    extension: Option<&str>,
    frontend: &Frontend,
    limits: &DecodeLimits,
) -> Result<(Vec<f32>, TrackStats), TranscodeError> {
    let decoded = decode_mono(data, extension, limits)?;
    let stats = TrackStats {
        duration_s: decoded.duration_s(),
        source_sample_rate: decoded.sample_rate,
        source_channels: decoded.source_channels as u32,
        codec: decoded.codec.clone(),
        packets: decoded.packets,
        bad_packets: decoded.bad_packets,
        ref_db: 0.0,
        windows: 0,
    };
    let samples = resample_mono(
        decoded.samples,
        decoded.sample_rate,
        frontend.config().sample_rate,
    )?;
    Ok((samples, stats))
}

/// Decodes and analyses one track. A track too short for a single window is
/// an error ([`TranscodeError::TooShort`]) so it gets a failure record.
pub fn process_track(
    data: Bytes,
    extension: Option<&str>,
    frontend: &Frontend,
    limits: &DecodeLimits,
) -> Result<TrackOutput, TranscodeError> {
    let (samples, mut stats) = decode_for_frontend(data, extension, frontend, limits)?;
    let spectrogram = frontend.spectrogram(&samples);
    let windows = frontend.windows(&spectrogram);
    if windows.is_empty() {
        return Err(TranscodeError::TooShort {
            duration_s: stats.duration_s,
            window_s: frontend.config().window_seconds(),
        });
    }
    stats.ref_db = spectrogram.ref_db;
    stats.windows = windows.len() as u32;
    Ok(TrackOutput {
        stats,
        spectrogram,
        windows,
    })
}

/// The file extension of a URL or path, lower-cased, as a decoder hint.
pub fn extension_hint(source: &str) -> Option<String> {
    let path = source.split(['?', '#']).next().unwrap_or(source);
    let name = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = name.rsplit_once('.')?;
    (!ext.is_empty() && ext.len() <= 5).then(|| ext.to_ascii_lowercase())
}
