//! The index worker: one [`IndexBlockTask`] is one row block of the table,
//! computed against the whole catalogue and written to storage.

use std::sync::Arc;

use deepcuts_core::proto::{IndexBlockTask, Stage};
use deepcuts_core::queue::names;
use deepcuts_core::storage::Store;
use deepcuts_core::worker::{TaskError, TaskHandler, UnitRef, UnitReport};
use serde::{Deserialize, Serialize};

use crate::exact::{IndexParams, DEFAULT_NEAR_DUPLICATE_THRESHOLD, DEFAULT_TILE_ROWS, MAX_K};
use crate::job::{build_block, load_embeddings, BlockRef, JobEmbeddings, JobError};

/// k when a task leaves it at 0.
pub const DEFAULT_K: u32 = 10;

/// The indexer's own settings (`[settings]` in its config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexerSettings {
    /// Threads for the matrix work; 0 means every core.
    pub threads: usize,
    /// Rows per tile. Every worker of a job must agree, since block
    /// boundaries follow tile boundaries.
    pub tile_rows: usize,
    /// Pairs scoring at least this are listed as near-duplicates.
    pub near_duplicate_threshold: f32,
}

impl Default for IndexerSettings {
    fn default() -> Self {
        Self {
            threads: 0,
            tile_rows: DEFAULT_TILE_ROWS,
            near_duplicate_threshold: DEFAULT_NEAR_DUPLICATE_THRESHOLD,
        }
    }
}

impl IndexerSettings {
    pub fn params(&self, k: usize) -> IndexParams {
        let mut params = IndexParams::new(k);
        if self.threads > 0 {
            params.threads = self.threads;
        }
        params.tile_rows = self.tile_rows.max(1);
        params.near_duplicate_threshold = Some(self.near_duplicate_threshold);
        params
    }
}

type CachedEmbeddings = Option<(String, String, Arc<JobEmbeddings>)>;

/// The handler the core consume loop runs for `deepcuts.index`.
#[derive(Debug)]
pub struct IndexWorker {
    store: Store,
    settings: IndexerSettings,
    /// The last job's embeddings: consecutive blocks of one job reuse them.
    cache: tokio::sync::Mutex<CachedEmbeddings>,
}

impl IndexWorker {
    pub fn new(store: Store, settings: IndexerSettings) -> Self {
        Self {
            store,
            settings,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    async fn embeddings(
        &self,
        job_id: &str,
        model_id: &str,
    ) -> Result<Arc<JobEmbeddings>, JobError> {
        let mut cache = self.cache.lock().await;
        if let Some((job, model, embeddings)) = cache.as_ref() {
            if job == job_id && model == model_id {
                return Ok(embeddings.clone());
            }
        }
        *cache = None;
        let embeddings = Arc::new(load_embeddings(self.store.as_ref(), job_id, model_id).await?);
        tracing::info!(
            job_id,
            model_id,
            tracks = embeddings.track_ids.len(),
            rejected = embeddings.rejected.len(),
            "embeddings loaded"
        );
        *cache = Some((job_id.to_owned(), model_id.to_owned(), embeddings.clone()));
        Ok(embeddings)
    }
}

/// The unit id of a block task: `<model>/block=<i>`.
pub fn unit_id(model_id: &str, block: u32) -> String {
    format!("{model_id}/block={block:05}")
}

fn task_error(err: JobError) -> TaskError {
    if err.is_transient() {
        TaskError::Transient(err.to_string())
    } else {
        TaskError::permanent(err.kind(), err.to_string())
    }
}

impl TaskHandler for IndexWorker {
    type Task = IndexBlockTask;
    const STAGE: Stage = Stage::Index;

    fn queue(&self) -> &str {
        names::INDEX
    }

    fn unit(task: &IndexBlockTask) -> UnitRef {
        UnitRef {
            job_id: task.job_id.clone(),
            unit_id: unit_id(&task.model_id, task.block),
        }
    }

    async fn handle(&self, task: IndexBlockTask) -> Result<UnitReport, TaskError> {
        let k = if task.k == 0 { DEFAULT_K } else { task.k };
        if k as usize > MAX_K {
            return Err(TaskError::permanent(
                "bad_request",
                format!("k {k} is above {MAX_K}"),
            ));
        }
        if task.block_count == 0 || task.block >= task.block_count {
            return Err(TaskError::permanent(
                "bad_request",
                format!("block {} of {}", task.block, task.block_count),
            ));
        }
        let embeddings = self
            .embeddings(&task.job_id, &task.model_id)
            .await
            .map_err(task_error)?;
        let at = BlockRef {
            job_id: &task.job_id,
            model_id: &task.model_id,
            block: task.block,
            block_count: task.block_count,
        };
        let params = self.settings.params(k as usize);
        let report = build_block(self.store.as_ref(), embeddings, &at, &params)
            .await
            .map_err(task_error)?;
        tracing::info!(job_id = %task.job_id, unit_id = %unit_id(&task.model_id, task.block), rows = report.rows, near_duplicates = report.near_duplicates, seconds = report.seconds, "block written");
        Ok(UnitReport {
            spawned_units: Vec::new(),
            detail_json: serde_json::to_string(&report).unwrap_or_default(),
        })
    }
}
