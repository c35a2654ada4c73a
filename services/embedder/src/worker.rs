//! The embed worker: one [`EmbedTask`] (one spectrogram part) → one
//! embeddings part, through the core worker loop.
//!
//! Models are loaded once per process and kept (a job embeds all its parts
//! with one model). The output key is a function of the task, so a retry
//! rewrites the same object; the part is written in one `put`, so a reader
//! never sees half of it.

use std::collections::HashMap;
use std::sync::Arc;

use deepcuts_core::proto::{EmbedTask, Stage};
use deepcuts_core::queue::names;
use deepcuts_core::storage::Store;
use deepcuts_core::worker::{TaskError, TaskHandler, UnitRef, UnitReport};
use deepcuts_model::artifact::{load_model, LoadedModel};
use deepcuts_model::store::BlockingStore;
use deepcuts_model::ModelError;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::Mutex;
use tracing::info;

use crate::embed::{embed_part, EmbedError, EmbedRequest};

/// The worker's own settings (`[settings]` in the service config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderSettings {
    /// Windows per forward pass.
    pub batch_size: usize,
    /// libtorch intra-op threads on the CPU (0 = libtorch's default).
    pub threads: usize,
    /// Use CUDA when there is one.
    pub use_cuda: bool,
}

impl Default for EmbedderSettings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            threads: 0,
            use_cuda: true,
        }
    }
}

/// How an embedding error settles the delivery.
pub fn task_error(err: EmbedError) -> TaskError {
    if err.is_transient() {
        return TaskError::Transient(err.to_string());
    }
    let kind = match &err {
        EmbedError::Model(ModelError::Store(e)) if e.is_not_found() => "missing_input",
        EmbedError::Model(ModelError::BadArtefact { .. }) => "bad_model",
        EmbedError::Model(ModelError::BadInput { .. }) | EmbedError::ShapeMismatch { .. } => {
            "bad_input"
        }
        _ => "embed",
    };
    TaskError::permanent(kind, err.to_string())
}

/// A loaded model. libtorch tensors may move between threads but not be
/// shared, so parts that use one model take turns (each pass already uses
/// every core).
type SharedModel = Arc<std::sync::Mutex<LoadedModel>>;

/// Consumes embed tasks.
pub struct EmbedHandler {
    store: Store,
    settings: EmbedderSettings,
    models: Mutex<HashMap<String, SharedModel>>,
}

impl std::fmt::Debug for EmbedHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedHandler")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EmbedHandler {
    pub fn new(store: Store, settings: EmbedderSettings) -> Self {
        if settings.threads > 0 {
            tch::set_num_threads(settings.threads as i32);
        }
        Self {
            store,
            settings,
            models: Mutex::new(HashMap::new()),
        }
    }

    fn device(&self) -> tch::Device {
        if self.settings.use_cuda {
            tch::Device::cuda_if_available()
        } else {
            tch::Device::Cpu
        }
    }

    async fn model(&self, model_id: &str) -> Result<SharedModel, TaskError> {
        let mut models = self.models.lock().await;
        if let Some(model) = models.get(model_id) {
            return Ok(model.clone());
        }
        let store = BlockingStore::new(self.store.clone(), Handle::current());
        let (id, device) = (model_id.to_owned(), self.device());
        let loaded = tokio::task::spawn_blocking(move || load_model(&store, &id, device))
            .await
            .map_err(|e| TaskError::Transient(format!("model loading thread failed: {e}")))?
            .map_err(|e| task_error(EmbedError::Model(e)))?;
        info!(model_id, device = ?loaded.vs.device(), "model loaded");
        let loaded = Arc::new(std::sync::Mutex::new(loaded));
        models.insert(model_id.to_owned(), loaded.clone());
        Ok(loaded)
    }
}

impl TaskHandler for EmbedHandler {
    type Task = EmbedTask;
    const STAGE: Stage = Stage::Embed;

    fn queue(&self) -> &str {
        names::EMBED
    }

    fn unit(task: &Self::Task) -> UnitRef {
        UnitRef {
            job_id: task.job_id.clone(),
            unit_id: format!("model={}/part={:05}", task.model_id, task.part),
        }
    }

    async fn handle(&self, task: Self::Task) -> Result<UnitReport, TaskError> {
        let model = self.model(&task.model_id).await?;
        let store = BlockingStore::new(self.store.clone(), Handle::current());
        let request = EmbedRequest {
            job_id: task.job_id.clone(),
            model_id: task.model_id.clone(),
            spectrogram_key: task.spectrogram_key.clone(),
            part: task.part,
            batch_size: self.settings.batch_size,
        };
        let outcome = tokio::task::spawn_blocking(move || {
            // A poisoned lock only means an earlier part panicked mid-pass;
            // the weights are read-only, so the model is still good.
            let model = model
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            embed_part(&store, &model, &request)
        })
        .await
        .map_err(|e| TaskError::Transient(format!("embedding thread failed: {e}")))?
        .map_err(task_error)?;
        let detail = serde_json::json!({
            "key": outcome.key,
            "tracks": outcome.tracks,
            "windows": outcome.windows,
            "windows_per_second": outcome.windows as f64 / outcome.seconds.max(1e-9),
        });
        Ok(UnitReport {
            spawned_units: Vec::new(),
            detail_json: detail.to_string(),
        })
    }
}
