//! Queue messages, generated from `proto/deepcuts/v1/*.proto` by the build script.
//!
//! Every message names artefacts by their storage keys; see [`crate::keys`].

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/deepcuts.v1.rs"));
}

pub use v1::*;

impl Stage {
    /// The short lowercase name used in storage keys and logs ("crawl", "transcode", ...).
    pub fn key_name(self) -> &'static str {
        match self {
            Stage::Unspecified => "unspecified",
            Stage::Crawl => "crawl",
            Stage::Transcode => "transcode",
            Stage::Train => "train",
            Stage::Embed => "embed",
            Stage::Index => "index",
        }
    }
}
