//! deepcuts embedder: turns every track of a spectrogram part into one vector.
//!
//! [`embed::embed_part`] loads nothing itself: give it a model loaded once
//! with [`deepcuts_model::artifact::load_model`]. For each part it embeds the
//! windows in batches without gradients (CUDA when present, else the CPU),
//! averages each track's window vectors, L2-normalises the mean and writes
//! `jobs/<job>/embeddings/model=<id>/part=<n>.parquet` with the columns
//! `track_id` (utf8), `window_count` (u32) and `embedding`
//! (fixed-size list of f32). The key is deterministic, so a retried task
//! rewrites the same object. [`worker::EmbedHandler`] serves the embed queue.

pub mod embed;
pub mod worker;

pub use embed::{embed_part, EmbedError, EmbedOutcome, EmbedRequest};
pub use worker::{EmbedHandler, EmbedderSettings};
