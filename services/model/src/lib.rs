//! What the deepcuts trainer and embedder share, so neither depends on the other:
//! - [`network`]: the `seed` and `default` CNNs and their heads;
//! - [`artifact`]: the model artefact under `models/<id>/` (safetensors weights
//!   plus the JSON model card) and how to load it for inference;
//! - [`windows`]: the data contract with the transcoder: the columns, layout
//!   and footer metadata of spectrogram window files;
//! - [`store`]: blocking access to the object store for libtorch threads.

pub mod artifact;
pub mod error;
pub mod network;
pub mod store;
pub mod windows;

pub use error::ModelError;
