//! deepcuts transcoder: preview bytes in, log-mel spectrogram windows out.

pub mod decode;
pub mod error;
pub mod fetch;
pub mod frontend;
pub mod pipeline;
pub mod plot;
pub mod schema;
pub mod worker;

pub use decode::{decode_mono, decode_mono_segmented, resample_mono, DecodeLimits, DecodedAudio};
pub use error::TranscodeError;
pub use fetch::{FetchConfig, Fetched, Fetcher};
pub use frontend::{
    DbScale, FrequencyScale, Frontend, FrontendConfig, MelNorm, PadMode, Spectrogram, Window,
};
pub use pipeline::{decode_for_frontend, extension_hint, process_track, TrackOutput, TrackStats};
pub use worker::{BatchReport, TranscodeHandler, TranscoderSettings};
