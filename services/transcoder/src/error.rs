//! One error type for everything that can go wrong with one track.

use std::time::Duration;

/// Why a track could not be turned into spectrogram windows.
///
/// Every variant maps to a stable [`TranscodeError::kind`] string that failure
/// records and metrics use, so dashboards do not depend on message wording.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("unsupported source {url}: {reason}")]
    InvalidSource { url: String, reason: String },
    #[error("http status {status} from {url}")]
    HttpStatus { url: String, status: u16 },
    #[error("unexpected content type {content_type:?} from {url}")]
    ContentType { url: String, content_type: String },
    #[error("{url} exceeds the size cap of {cap_bytes} bytes")]
    TooLarge { url: String, cap_bytes: u64 },
    #[error("fetching {url} failed after {attempts} attempt(s): {reason}")]
    Network {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("fetching {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("input is empty")]
    Empty,
    #[error("unsupported or unrecognised audio format: {0}")]
    UnsupportedFormat(String),
    #[error("no decodable audio track")]
    NoAudioTrack,
    #[error("too many bad packets: {bad} of {total}")]
    TooManyBadPackets { bad: u64, total: u64 },
    #[error("no audio could be decoded ({bad_packets} bad packets)")]
    NoAudio { bad_packets: u64 },
    #[error("decoded audio exceeds the duration cap of {cap_s} s")]
    DurationCap { cap_s: f64 },
    #[error("audio of {duration_s:.2} s is shorter than one {window_s:.2} s window")]
    TooShort { duration_s: f64, window_s: f64 },
    #[error("decoder panicked: {0}")]
    DecoderPanic(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("invalid front-end config: {0}")]
    Config(String),
}

impl TranscodeError {
    /// Stable, machine-readable name of the failure, for failure records.
    pub fn kind(&self) -> &'static str {
        match self {
            TranscodeError::InvalidSource { .. } => "invalid_source",
            TranscodeError::HttpStatus { .. } => "http_status",
            TranscodeError::ContentType { .. } => "content_type",
            TranscodeError::TooLarge { .. } => "too_large",
            TranscodeError::Network { .. } => "network",
            TranscodeError::Timeout { .. } => "timeout",
            TranscodeError::Io { .. } => "io",
            TranscodeError::Empty => "empty",
            TranscodeError::UnsupportedFormat(_) => "unsupported_format",
            TranscodeError::NoAudioTrack => "no_audio_track",
            TranscodeError::TooManyBadPackets { .. } => "too_many_bad_packets",
            TranscodeError::NoAudio { .. } => "no_audio",
            TranscodeError::DurationCap { .. } => "duration_cap",
            TranscodeError::TooShort { .. } => "too_short",
            TranscodeError::DecoderPanic(_) => "decoder_panic",
            TranscodeError::Decode(_) => "decode",
            TranscodeError::Resample(_) => "resample",
            TranscodeError::Config(_) => "config",
        }
    }

    /// Whether trying again later could succeed (network trouble, server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            TranscodeError::HttpStatus { status, .. } => *status == 429 || *status >= 500,
            TranscodeError::Network { .. } | TranscodeError::Timeout { .. } => true,
            _ => false,
        }
    }
}
