//! deepcuts indexer: the exact cosine top-k neighbour table of a job's
//! track embeddings.
//!
//! The N × N score matrix never exists: rows are cut into tiles, each tile
//! pair is one SIMD matrix product ([`kernel`]), and a vectorised threshold
//! scan ([`scan`]) feeds the few scores that matter into per-row top-k lists
//! ([`topk`]). [`exact`] runs this over the whole table or over one block
//! (a shard for one worker task). [`job`] reads a job's embeddings from
//! storage and writes its table; [`worker`] is the queue handler.

pub mod error;
pub mod exact;
pub mod job;
pub mod kernel;
pub mod matrix;
pub mod npy;
pub mod parity;
pub mod scan;
pub mod table;
pub mod topk;
pub mod worker;

pub use error::IndexError;
pub use exact::{
    block_table, full_table, IndexParams, Tiling, DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    DEFAULT_TILE_ROWS, MAX_K,
};
pub use kernel::{CpuKernel, ScoreKernel};
pub use matrix::EmbeddingMatrix;
pub use table::{NearDuplicate, NeighbourTable};
