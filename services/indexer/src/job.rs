//! A job's embeddings in, its neighbour table out, through core storage.
//!
//! Input: `jobs/<job>/embeddings/model=<id>/part=<n>.parquet` with columns
//! `track_id` (utf8), `window_count` (u32) and `embedding`
//! (fixed-size list of f32). Rows are sorted by track id, so row order is id
//! order and ties between equal scores go to the lower track id.
//!
//! Output, per row block: `jobs/<job>/neighbours/model=<id>/block=<i>.parquet`
//! ([`neighbour_schema`]) and `jobs/<job>/near_duplicates/model=<id>/block=<i>.parquet`
//! ([`near_duplicate_schema`]). Both are pure functions of the embeddings,
//! the block and the parameters, so a retried task rewrites the same bytes.

use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{
    Array, FixedSizeListArray, Float32Array, LargeStringArray, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deepcuts_core::failures::{write_failure, FailureRecord};
use deepcuts_core::keys;
use deepcuts_core::parquet_io::{read_batches, write_batches_with, ParquetIoError, ParquetOptions};
use deepcuts_core::proto::Stage;
use deepcuts_core::storage::{ObjectStore, StoreError};

use crate::error::IndexError;
use crate::exact::{IndexParams, Tiling};
use crate::matrix::{normalise_row, EmbeddingMatrix};
use crate::table::NeighbourTable;

/// Why a job's table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Parquet(#[from] ParquetIoError),
    #[error("{key}: {message}")]
    Schema { key: String, message: String },
    #[error("no embeddings under {prefix}")]
    NoEmbeddings { prefix: String },
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl JobError {
    /// Worth retrying: the store could not be reached, as opposed to bad
    /// or missing input, which no retry fixes.
    pub fn is_transient(&self) -> bool {
        let store = match self {
            JobError::Store(err) | JobError::Parquet(ParquetIoError::Store(err)) => err,
            _ => return false,
        };
        !matches!(
            store,
            StoreError::NotFound { .. }
                | StoreError::InvalidKey { .. }
                | StoreError::InvalidUrl { .. }
        )
    }

    /// Short machine-readable kind for failure records.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Store(_) => "storage",
            JobError::Parquet(_) | JobError::Schema { .. } => "bad_embeddings",
            JobError::NoEmbeddings { .. } => "no_embeddings",
            JobError::Index(_) => "bad_request",
        }
    }
}

/// A track left out of the index, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedTrack {
    pub track_id: String,
    pub reason: String,
}

/// Every usable embedding of a job, sorted by track id.
#[derive(Debug)]
pub struct JobEmbeddings {
    pub track_ids: Vec<String>,
    pub matrix: EmbeddingMatrix,
    /// Tracks with a null, zero or non-finite embedding, or a repeated id.
    pub rejected: Vec<RejectedTrack>,
}

/// Where a near-duplicate block goes (beside the neighbour table, not in it,
/// so that listing the table's blocks never picks it up).
pub fn near_duplicates_block(job_id: &str, model_id: &str, block: u32) -> String {
    format!("jobs/{job_id}/near_duplicates/model={model_id}/block={block:05}.parquet")
}

/// Loads and normalises every embedding part of `job_id`/`model_id`.
pub async fn load_embeddings(
    store: &dyn ObjectStore,
    job_id: &str,
    model_id: &str,
) -> Result<JobEmbeddings, JobError> {
    let prefix = keys::embeddings_prefix(job_id, model_id);
    let parts: Vec<String> = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|key| key.ends_with(".parquet"))
        .collect();
    if parts.is_empty() {
        return Err(JobError::NoEmbeddings { prefix });
    }
    let mut ids: Vec<String> = Vec::new();
    let mut data: Vec<f32> = Vec::new();
    let mut rejected = Vec::new();
    let mut dim = None;
    for key in &parts {
        for batch in read_batches(store, key).await? {
            append_batch(key, &batch, &mut dim, &mut ids, &mut data, &mut rejected)?;
        }
    }
    let dim = dim.ok_or_else(|| JobError::NoEmbeddings {
        prefix: prefix.clone(),
    })?;
    // Sort by id (stable, so the first copy of a repeated id wins).
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
    let mut track_ids = Vec::with_capacity(ids.len());
    let mut sorted = Vec::with_capacity(data.len());
    for &row in &order {
        if track_ids.last() == Some(&ids[row]) {
            rejected.push(RejectedTrack {
                track_id: ids[row].clone(),
                reason: "track id appears more than once; the first part's embedding is used"
                    .into(),
            });
            continue;
        }
        track_ids.push(std::mem::take(&mut ids[row]));
        sorted.extend_from_slice(&data[row * dim..(row + 1) * dim]);
    }
    drop(data);
    let matrix = EmbeddingMatrix::from_unit_rows(sorted, dim)?;
    Ok(JobEmbeddings {
        track_ids,
        matrix,
        rejected,
    })
}

fn schema_error(key: &str, message: impl Into<String>) -> JobError {
    JobError::Schema {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn append_batch(
    key: &str,
    batch: &RecordBatch,
    dim: &mut Option<usize>,
    ids: &mut Vec<String>,
    data: &mut Vec<f32>,
    rejected: &mut Vec<RejectedTrack>,
) -> Result<(), JobError> {
    let id_column = batch
        .column_by_name("track_id")
        .ok_or_else(|| schema_error(key, "no track_id column"))?;
    let track_id = |row: usize| -> Option<String> {
        if id_column.is_null(row) {
            return None;
        }
        if let Some(a) = id_column.as_any().downcast_ref::<StringArray>() {
            return Some(a.value(row).to_owned());
        }
        id_column
            .as_any()
            .downcast_ref::<LargeStringArray>()
            .map(|a| a.value(row).to_owned())
    };
    let embeddings = batch
        .column_by_name("embedding")
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .ok_or_else(|| schema_error(key, "no embedding column of fixed-size lists"))?;
    let width = embeddings.value_length() as usize;
    match *dim {
        None => *dim = Some(width),
        Some(d) if d != width => {
            return Err(schema_error(
                key,
                format!("embedding width {width}, earlier parts had {d}"),
            ))
        }
        Some(_) => {}
    }
    let values = embeddings
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| schema_error(key, "embedding values are not f32"))?;
    for row in 0..batch.num_rows() {
        let Some(id) = track_id(row) else {
            return Err(schema_error(key, format!("row {row} has no track id")));
        };
        let start = embeddings.value_offset_at(row);
        let mut vector = values.values()[start..start + width].to_vec();
        let usable = if embeddings.is_null(row) || values.null_count() > 0 {
            Err("embedding is null".to_owned())
        } else {
            normalise_row(&mut vector, 0).map_err(|err| match err {
                IndexError::ZeroVector { .. } => "embedding is all zeros".to_owned(),
                IndexError::NonFinite { .. } => "embedding has a non-finite value".to_owned(),
                other => other.to_string(),
            })
        };
        match usable {
            Ok(()) => {
                ids.push(id);
                data.extend_from_slice(&vector);
            }
            Err(reason) => rejected.push(RejectedTrack {
                track_id: id,
                reason,
            }),
        }
    }
    Ok(())
}

/// Schema of a neighbour block: each track's neighbours, best first.
pub fn neighbour_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("track_id", DataType::Utf8, false),
        Field::new(
            "neighbour_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new(
            "scores",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            false,
        ),
    ]))
}

/// Schema of a near-duplicate block: pairs with `track_id < duplicate_id`.
pub fn near_duplicate_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("track_id", DataType::Utf8, false),
        Field::new("duplicate_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ]))
}

/// The neighbour rows of `table` as a record batch.
pub fn neighbour_batch(
    track_ids: &[String],
    table: &NeighbourTable,
) -> Result<RecordBatch, JobError> {
    let mut id_col = StringBuilder::new();
    let mut neighbours = ListBuilder::new(StringBuilder::new());
    let mut scores = ListBuilder::new(Float32Builder::new());
    for row in 0..table.rows() {
        id_col.append_value(&track_ids[table.row_start + row]);
        let (ids, row_scores) = table.row(row);
        for &id in ids {
            neighbours.values().append_value(&track_ids[id as usize]);
        }
        neighbours.append(true);
        scores.values().append_slice(row_scores);
        scores.append(true);
    }
    RecordBatch::try_new(
        neighbour_schema(),
        vec![
            Arc::new(id_col.finish()),
            Arc::new(neighbours.finish()),
            Arc::new(scores.finish()),
        ],
    )
    .map_err(|err| schema_error("neighbour block", err.to_string()))
}

/// The near-duplicate pairs of `table` as a record batch.
pub fn near_duplicate_batch(
    track_ids: &[String],
    table: &NeighbourTable,
) -> Result<RecordBatch, JobError> {
    let first: StringArray = table
        .near_duplicates
        .iter()
        .map(|p| Some(track_ids[p.first as usize].as_str()))
        .collect();
    let second: StringArray = table
        .near_duplicates
        .iter()
        .map(|p| Some(track_ids[p.second as usize].as_str()))
        .collect();
    let score: Float32Array = table.near_duplicates.iter().map(|p| p.score).collect();
    RecordBatch::try_new(
        near_duplicate_schema(),
        vec![Arc::new(first), Arc::new(second), Arc::new(score)],
    )
    .map_err(|err| schema_error("near-duplicate block", err.to_string()))
}

/// Which block of which job a table belongs to.
#[derive(Debug, Clone)]
pub struct BlockRef<'a> {
    pub job_id: &'a str,
    pub model_id: &'a str,
    pub block: u32,
    pub block_count: u32,
}

/// Writes one block's neighbour and near-duplicate files.
pub async fn write_block(
    store: &dyn ObjectStore,
    at: &BlockRef<'_>,
    embeddings: &JobEmbeddings,
    table: &NeighbourTable,
    params: &IndexParams,
) -> Result<(), JobError> {
    let options = ParquetOptions {
        metadata: vec![
            ("deepcuts.model_id".into(), at.model_id.into()),
            ("deepcuts.k".into(), table.k.to_string()),
            ("deepcuts.block".into(), at.block.to_string()),
            ("deepcuts.block_count".into(), at.block_count.to_string()),
            ("deepcuts.tile_rows".into(), params.tile_rows.to_string()),
            (
                "deepcuts.tracks".into(),
                embeddings.track_ids.len().to_string(),
            ),
            (
                "deepcuts.near_duplicate_threshold".into(),
                params
                    .near_duplicate_threshold
                    .map_or("none".into(), |t| t.to_string()),
            ),
        ],
        ..ParquetOptions::default()
    };
    let neighbours = neighbour_batch(&embeddings.track_ids, table)?;
    let key = keys::neighbours_block(at.job_id, at.model_id, at.block);
    write_batches_with(store, &key, neighbour_schema(), &[neighbours], &options).await?;
    let duplicates = near_duplicate_batch(&embeddings.track_ids, table)?;
    let key = near_duplicates_block(at.job_id, at.model_id, at.block);
    write_batches_with(
        store,
        &key,
        near_duplicate_schema(),
        &[duplicates],
        &options,
    )
    .await?;
    Ok(())
}

/// Records each rejected track as a failure of the index stage.
pub async fn record_rejected(
    store: &dyn ObjectStore,
    job_id: &str,
    rejected: &[RejectedTrack],
) -> Result<(), JobError> {
    for track in rejected {
        let record = FailureRecord::new(
            job_id,
            Stage::Index,
            &track.track_id,
            "bad_embedding",
            &track.reason,
        );
        write_failure(store, &record).await?;
    }
    Ok(())
}

/// Rows of `block` of `block_count` for a job of `rows` tracks.
pub fn block_rows(
    rows: usize,
    params: &IndexParams,
    block: u32,
    block_count: u32,
) -> std::ops::Range<usize> {
    Tiling::new(rows, params.tile_rows).rows_of_block(block as usize, block_count as usize)
}

/// What building a block or a table did, for events and logs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BuildReport {
    pub tracks: usize,
    pub rows: usize,
    pub k: usize,
    pub near_duplicates: usize,
    pub rejected: usize,
    pub seconds: f64,
}

/// One block task: the rows of `at.block` against every track, written.
pub async fn build_block(
    store: &dyn ObjectStore,
    embeddings: Arc<JobEmbeddings>,
    at: &BlockRef<'_>,
    params: &IndexParams,
) -> Result<BuildReport, JobError> {
    let started = std::time::Instant::now();
    let (block, block_count) = (at.block as usize, at.block_count as usize);
    let table = {
        let embeddings = embeddings.clone();
        let params = params.clone();
        tokio::task::spawn_blocking(move || {
            crate::exact::block_table(
                &embeddings.matrix,
                &params,
                block,
                block_count,
                &crate::kernel::CpuKernel,
                &|_| {},
            )
        })
        .await
        .map_err(|err| schema_error("index block", format!("index thread failed: {err}")))??
    };
    write_block(store, at, &embeddings, &table, params).await?;
    // One task records the rejected tracks; the key is per track, so a repeat is harmless.
    if at.block == 0 {
        record_rejected(store, at.job_id, &embeddings.rejected).await?;
    }
    Ok(BuildReport {
        tracks: embeddings.track_ids.len(),
        rows: table.rows(),
        k: table.k,
        near_duplicates: table.near_duplicates.len(),
        rejected: embeddings.rejected.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Progress of the single-process build, in tile pairs.
pub trait BuildProgress: Send + Sync {
    fn start(&self, total_pairs: u64);
    fn advance(&self, pairs: u64);
}

/// No progress display.
impl BuildProgress for () {
    fn start(&self, _total_pairs: u64) {}
    fn advance(&self, _pairs: u64) {}
}

/// The single-process path: the whole table at once, using the symmetry of
/// the scores, written as the same `block_count` block files the block
/// tasks would write.
pub async fn build_table(
    store: &dyn ObjectStore,
    job_id: &str,
    model_id: &str,
    params: &IndexParams,
    block_count: u32,
    progress: Arc<dyn BuildProgress>,
) -> Result<BuildReport, JobError> {
    if block_count == 0 {
        return Err(IndexError::ZeroBlocks.into());
    }
    let started = std::time::Instant::now();
    let embeddings = Arc::new(load_embeddings(store, job_id, model_id).await?);
    progress.start(crate::exact::full_table_pairs(
        embeddings.track_ids.len(),
        params.tile_rows,
    ));
    let table = {
        let embeddings = embeddings.clone();
        let params = params.clone();
        tokio::task::spawn_blocking(move || {
            crate::exact::full_table(
                &embeddings.matrix,
                &params,
                &crate::kernel::CpuKernel,
                &|pairs| progress.advance(pairs),
            )
        })
        .await
        .map_err(|err| schema_error("index table", format!("index thread failed: {err}")))??
    };
    for block in 0..block_count {
        let rows = block_rows(embeddings.track_ids.len(), params, block, block_count);
        let part = table.slice(rows);
        let at = BlockRef {
            job_id,
            model_id,
            block,
            block_count,
        };
        write_block(store, &at, &embeddings, &part, params).await?;
    }
    record_rejected(store, job_id, &embeddings.rejected).await?;
    Ok(BuildReport {
        tracks: embeddings.track_ids.len(),
        rows: table.rows(),
        k: table.k,
        near_duplicates: table.near_duplicates.len(),
        rejected: embeddings.rejected.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
