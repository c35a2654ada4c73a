//! The transcode worker: one [`TranscodeBatchTask`] → one windows Parquet,
//! one summary Parquet and a failure record per track that failed.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray};
use deepcuts_core::failures::{write_failure, FailureRecord};
use deepcuts_core::keys;
use deepcuts_core::parquet_io::{read_batches, write_batches_with, ParquetIoError, ParquetOptions};
use deepcuts_core::proto::{Stage, TranscodeBatchTask};
use deepcuts_core::queue::names;
use deepcuts_core::storage::{Store, StoreError};
use deepcuts_core::worker::{TaskError, TaskHandler, UnitRef, UnitReport};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::decode::DecodeLimits;
use crate::error::TranscodeError;
use crate::fetch::{FetchConfig, Fetcher};
use crate::frontend::{Frontend, FrontendConfig};
use crate::pipeline::{extension_hint, process_track, TrackOutput};
use crate::schema;

/// The worker's own settings (`[settings]` in the service config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscoderSettings {
    pub fetch: FetchConfig,
    pub limits: DecodeLimits,
    /// Tracks of a batch in flight at once (fetching or decoding). Decoding
    /// itself runs on the rayon pool, one thread per core.
    pub track_concurrency: usize,
    /// Frames between window starts; `None` keeps the preset's (non-overlapping).
    pub window_hop_frames: Option<usize>,
}

impl Default for TranscoderSettings {
    fn default() -> Self {
        TranscoderSettings {
            fetch: FetchConfig::default(),
            limits: DecodeLimits::default(),
            track_concurrency: 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            window_hop_frames: None,
        }
    }
}

pub struct TranscodeHandler {
    store: Store,
    fetcher: Fetcher,
    settings: TranscoderSettings,
    frontends: Vec<Arc<Frontend>>,
}

impl std::fmt::Debug for TranscodeHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscodeHandler")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Everything known about a batch's tracks after processing.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchReport {
    pub tracks: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub windows: usize,
    pub bad_packets: u64,
}

fn store_error(err: StoreError) -> TaskError {
    match err {
        StoreError::NotFound { key } => {
            TaskError::permanent("missing_input", format!("{key} not found"))
        }
        other => TaskError::Transient(other.to_string()),
    }
}

fn parquet_error(err: ParquetIoError) -> TaskError {
    match err {
        ParquetIoError::Store(e) => store_error(e),
        other => TaskError::permanent("bad_catalogue", other.to_string()),
    }
}

impl TranscodeHandler {
    pub fn new(store: Store, settings: TranscoderSettings) -> Result<Self, TranscodeError> {
        let fetcher = Fetcher::new(settings.fetch.clone())?;
        let frontends = ["default", "seed"]
            .iter()
            .map(|name| {
                let mut config = FrontendConfig::preset(name)?;
                if let Some(hop) = settings.window_hop_frames {
                    config.window_hop_frames = hop;
                }
                Frontend::new(config).map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        Ok(TranscodeHandler {
            store,
            fetcher,
            settings,
            frontends,
        })
    }

    fn frontend(&self, preset: &str) -> Option<Arc<Frontend>> {
        let name = if preset.is_empty() { "default" } else { preset };
        self.frontends
            .iter()
            .find(|f| f.config().preset == name)
            .cloned()
    }

    /// (track_id, preview_url) rows of the catalogue, in file order.
    async fn catalogue_rows(&self, key: &str) -> Result<Vec<(String, String)>, TaskError> {
        let batches = read_batches(self.store.as_ref(), key)
            .await
            .map_err(parquet_error)?;
        let mut rows = Vec::new();
        for batch in &batches {
            let ids = string_column(batch, "track_id", key)?;
            let urls = string_column(batch, "preview_url", key)?;
            for i in 0..batch.num_rows() {
                if ids.is_valid(i) && urls.is_valid(i) {
                    rows.push((ids.value(i).to_string(), urls.value(i).to_string()));
                }
            }
        }
        Ok(rows)
    }

    /// Fetches and decodes one track. Decoding runs on the blocking pool (and
    /// inside it on rayon), so the async threads keep fetching.
    async fn transcode_one(
        &self,
        url: &str,
        frontend: Arc<Frontend>,
    ) -> Result<TrackOutput, TranscodeError> {
        let fetched = self.fetcher.fetch(url).await?;
        let ext = extension_hint(url);
        let limits = self.settings.limits.clone();
        tokio::task::spawn_blocking(move || {
            process_track(fetched.data, ext.as_deref(), &frontend, &limits)
        })
        .await
        .unwrap_or_else(|join| Err(TranscodeError::DecoderPanic(join.to_string())))
    }

    /// Processes a whole task and writes its artefacts; the caller acks after.
    pub async fn run_batch(&self, task: &TranscodeBatchTask) -> Result<BatchReport, TaskError> {
        let frontend = self.frontend(&task.frontend).ok_or_else(|| {
            TaskError::permanent(
                "bad_task",
                format!("unknown front-end preset {:?}", task.frontend),
            )
        })?;
        let mut rows = self.catalogue_rows(&task.catalogue_key).await?;
        let mut failures: Vec<(String, TranscodeError)> = Vec::new();
        if !task.track_ids.is_empty() {
            let wanted: HashSet<&str> = task.track_ids.iter().map(String::as_str).collect();
            let present: HashSet<String> = rows.iter().map(|(id, _)| id.clone()).collect();
            rows.retain(|(id, _)| wanted.contains(id.as_str()));
            for id in &task.track_ids {
                if !present.contains(id) {
                    failures.push((
                        id.clone(),
                        TranscodeError::InvalidSource {
                            url: task.catalogue_key.clone(),
                            reason: format!("track {id} is not in the catalogue"),
                        },
                    ));
                }
            }
        }
        // A track listed twice is processed once.
        let mut seen = HashSet::new();
        rows.retain(|(id, _)| seen.insert(id.clone()));

        let results: Vec<(String, Result<TrackOutput, TranscodeError>)> = futures::stream::iter(rows)
            .map(|(id, url)| {
                let frontend = frontend.clone();
                async move {
                    let result = self.transcode_one(&url, frontend).await;
                    match &result {
                        Ok(out) => tracing::debug!(job_id = %task.job_id, unit_id = %task.batch_id, track_id = %id, windows = out.windows.len(), bad_packets = out.stats.bad_packets, "track transcoded"),
                        Err(err) => tracing::warn!(job_id = %task.job_id, unit_id = %task.batch_id, track_id = %id, kind = err.kind(), error = %err, "track failed"),
                    }
                    (id, result)
                }
            })
            .buffered(self.settings.track_concurrency.max(1))
            .collect()
            .await;

        let mut done: Vec<(String, TrackOutput)> = Vec::new();
        for (id, result) in results {
            match result {
                Ok(out) => done.push((id, out)),
                Err(err) => failures.push((id, err)),
            }
        }
        // Nothing worked and every failure might pass later (network down,
        // server overloaded): retry the batch rather than record failures.
        if done.is_empty() && !failures.is_empty() && failures.iter().all(|(_, e)| e.is_transient())
        {
            return Err(TaskError::Transient(format!(
                "all {} tracks failed transiently, e.g. {}",
                failures.len(),
                failures[0].1
            )));
        }

        let config = frontend.config().clone();
        let windows = schema::windows_batch(&config, &done)
            .map_err(|e| TaskError::permanent("encode", e.to_string()))?;
        let summary = schema::summary_batch(&done)
            .map_err(|e| TaskError::permanent("encode", e.to_string()))?;
        for (id, err) in &failures {
            let unit = format!("{}/{}", task.batch_id, id);
            let record = FailureRecord::new(
                &task.job_id,
                Stage::Transcode,
                &unit,
                err.kind(),
                err.to_string(),
            );
            write_failure(self.store.as_ref(), &record)
                .await
                .map_err(store_error)?;
        }
        let options = ParquetOptions::default();
        write_batches_with(
            self.store.as_ref(),
            &schema::summary_key(&task.job_id, &task.batch_id),
            schema::summary_schema(),
            &[summary],
            &options,
        )
        .await
        .map_err(parquet_error)?;
        // The windows file last: its presence means the batch is complete.
        write_batches_with(
            self.store.as_ref(),
            &keys::spectrogram_batch(&task.job_id, &task.batch_id),
            schema::windows_schema(&config),
            &[windows],
            &options,
        )
        .await
        .map_err(parquet_error)?;
        Ok(BatchReport {
            tracks: done.len() + failures.len(),
            succeeded: done.len(),
            failed: failures.len(),
            windows: done.iter().map(|(_, t)| t.windows.len()).sum(),
            bad_packets: done.iter().map(|(_, t)| t.stats.bad_packets).sum(),
        })
    }
}

fn string_column<'a>(
    batch: &'a RecordBatch,
    name: &str,
    key: &str,
) -> Result<&'a StringArray, TaskError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| {
            TaskError::permanent("bad_catalogue", format!("{key} has no utf8 column {name}"))
        })
}

impl TaskHandler for TranscodeHandler {
    type Task = TranscodeBatchTask;
    const STAGE: Stage = Stage::Transcode;

    fn queue(&self) -> &str {
        names::TRANSCODE
    }

    fn unit(task: &Self::Task) -> UnitRef {
        UnitRef {
            job_id: task.job_id.clone(),
            unit_id: task.batch_id.clone(),
        }
    }

    async fn handle(&self, task: Self::Task) -> Result<UnitReport, TaskError> {
        let report = self.run_batch(&task).await?;
        tracing::info!(job_id = %task.job_id, unit_id = %task.batch_id, tracks = report.tracks, failed = report.failed, windows = report.windows, "batch written");
        Ok(UnitReport {
            spawned_units: Vec::new(),
            detail_json: serde_json::to_string(&report).unwrap_or_default(),
        })
    }
}
