//! The error type of the shared model code.

use deepcuts_core::parquet_io::ParquetIoError;
use deepcuts_core::storage::StoreError;

/// Why a model could not be built, loaded, or fed its input.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An architecture, objective or geometry that cannot work.
    #[error("invalid model config: {0}")]
    Config(String),
    /// An input artefact does not have the expected columns or shapes.
    #[error("bad input artefact {key}: {reason}")]
    BadInput { key: String, reason: String },
    /// A stored model or checkpoint cannot be read back.
    #[error("bad model artefact {key}: {reason}")]
    BadArtefact { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Parquet(#[from] ParquetIoError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl ModelError {
    /// Whether a retry could succeed (a storage hiccup), as opposed to an
    /// input or artefact that will fail the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(err) => !err.is_not_found(),
            Self::Parquet(ParquetIoError::Store(err)) => !err.is_not_found(),
            _ => false,
        }
    }
}
