//! The trainer's error type.

use deepcuts_core::parquet_io::ParquetIoError;
use deepcuts_core::storage::StoreError;
use deepcuts_model::ModelError;

/// Why training (or loading a model) failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A hyper-parameter, architecture or objective that cannot work.
    #[error("invalid training config: {0}")]
    Config(String),
    /// The jobs hold no usable training data (no windows, no labels, one class...).
    #[error("no usable training data: {0}")]
    NoData(String),
    /// An input artefact does not have the expected columns or shapes.
    #[error("bad input artefact {key}: {reason}")]
    BadInput { key: String, reason: String },
    /// A stored model or checkpoint cannot be read back.
    #[error("bad model artefact {key}: {reason}")]
    BadArtefact { key: String, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Parquet(#[from] ParquetIoError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The caller asked training to stop (shutdown); the last checkpoint stands.
    #[error("training was cancelled")]
    Cancelled,
}

impl TrainError {
    /// Whether a retry of the same task could succeed (storage hiccups), as
    /// opposed to a task that will fail the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(err) => !err.is_not_found(),
            Self::Parquet(ParquetIoError::Store(err)) => !err.is_not_found(),
            Self::Model(err) => err.is_transient(),
            Self::Cancelled => true,
            _ => false,
        }
    }
}
