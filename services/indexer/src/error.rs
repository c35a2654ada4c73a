//! Typed errors of the indexer library.

use std::path::PathBuf;

/// Why an index could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("embedding dimension must be positive")]
    ZeroDimension,
    #[error("embedding data holds {len} floats, not a multiple of dimension {dim}")]
    RaggedData { len: usize, dim: usize },
    #[error("track {row} has a non-finite embedding value")]
    NonFinite { row: usize },
    #[error("track {row} has a zero embedding, so its cosine similarity is undefined")]
    ZeroVector { row: usize },
    #[error("k must be between 1 and {max}, got {k}")]
    BadK { k: usize, max: usize },
    #[error("block {block} is out of range for {block_count} blocks")]
    BadBlock { block: usize, block_count: usize },
    #[error("block count must be positive")]
    ZeroBlocks,
    #[error("the index needs at least two tracks, got {rows}")]
    TooFewTracks { rows: usize },
    #[error("too many tracks for 32-bit row indices: {rows}")]
    TooManyTracks { rows: usize },
    #[error("npy file {path}: {reason}")]
    Npy { path: PathBuf, reason: String },
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
