//! deepcuts trainer: learns what the catalogue sounds like.
//!
//! Two networks ([`deepcuts_model::network::Architecture`]): `seed`, the 2017
//! CNN reproduced as published, and `default`, a batch-normalised CNN for
//! log-mel windows. Two objectives ([`deepcuts_model::network::Objective`]): `genre` (cross-entropy over the
//! catalogue's genres) and `contrastive` (label-free NT-Xent over pairs of
//! windows of one track).
//!
//! [`train::train`] reads the windows of one or more jobs from storage, splits
//! them by a hash of the track id (never by window), trains with AdamW and a
//! warm-up + cosine schedule, stops early on validation loss, checkpoints every
//! epoch, resumes from the last checkpoint after a crash, and writes the model
//! artefact (safetensors weights + a JSON model card) and a report with the
//! holdout figures. It is deterministic for a given seed on the CPU.
//!
//! The worker ([`worker`]) consumes the train queue; see there for how it
//! copes with RabbitMQ's consumer timeout on runs that last hours.

pub mod artifact;
pub mod baseline;
pub mod bench;
pub mod config;
pub mod data;
pub mod error;
pub mod fixtures;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod split;
pub mod train;
pub mod worker;

pub use deepcuts_model::network::{Architecture, ModelSpec, Network, Objective};
pub use deepcuts_model::store::BlockingStore;
pub use error::TrainError;
