//! Embedding one spectrogram part.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use deepcuts_core::keys;
use deepcuts_core::parquet_io::ParquetOptions;
use deepcuts_model::artifact::LoadedModel;
use deepcuts_model::store::BlockingStore;
use deepcuts_model::windows::{part_info, PartRows, WindowShape};
use deepcuts_model::ModelError;
use tch::{Device, Kind, Tensor};
use tracing::info;

/// Why a part could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The part's windows do not have the shape the model was trained on.
    #[error("{key}: windows are {found}, the model expects {expected}")]
    ShapeMismatch {
        key: String,
        found: String,
        expected: String,
    },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl EmbedError {
    /// Whether a retry could succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Model(err) if err.is_transient())
    }
}

/// One part to embed.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    pub job_id: String,
    pub model_id: String,
    pub spectrogram_key: String,
    pub part: u32,
    /// Windows per forward pass.
    pub batch_size: usize,
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOutcome {
    pub key: String,
    pub tracks: usize,
    pub windows: usize,
    pub seconds: f64,
}

/// The output schema for embeddings of dimension `dim`.
pub fn embeddings_schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("track_id", DataType::Utf8, false),
        Field::new("window_count", DataType::UInt32, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
    ]))
}

/// Sum of a track's window embeddings, before normalising.
struct TrackSum {
    windows: u32,
    sum: Vec<f64>,
}

/// Embeds every window of one part and writes one unit vector per track.
pub fn embed_part(
    store: &BlockingStore,
    model: &LoadedModel,
    request: &EmbedRequest,
) -> Result<EmbedOutcome, EmbedError> {
    let started = Instant::now();
    let spec = &model.card.spec;
    let window_len = spec.bands * spec.frames;
    let device = model.vs.device();
    let file = store.read_parquet(&request.spectrogram_key)?;
    let expected = WindowShape {
        bands: spec.bands,
        frames: spec.frames,
    };
    let info = part_info(&request.spectrogram_key, &file, Some(expected))?;
    if info.shape != expected {
        return Err(EmbedError::ShapeMismatch {
            key: request.spectrogram_key.clone(),
            found: format!("{}x{}", info.shape.bands, info.shape.frames),
            expected: format!("{}x{}", expected.bands, expected.frames),
        });
    }
    let dim = spec.embedding_dim;
    let mut tracks: BTreeMap<String, TrackSum> = BTreeMap::new();
    let mut windows = 0usize;
    let batch_size = request.batch_size.max(1);
    let _guard = tch::no_grad_guard();
    for batch in &file.batches {
        let rows = PartRows::new(&request.spectrogram_key, batch, window_len)?;
        let n = batch.num_rows();
        let mut start = 0;
        while start < n {
            let end = (start + batch_size).min(n);
            let mut pixels = Vec::with_capacity((end - start) * window_len);
            for row in start..end {
                pixels.extend_from_slice(rows.window(row));
            }
            let input = Tensor::from_slice(&pixels)
                .view([(end - start) as i64, spec.bands as i64, spec.frames as i64])
                .to_device(device);
            let embedded = model
                .network
                .embed(&model.network.prepare_input(&input), false);
            let flat: Vec<f32> = Vec::try_from(
                embedded
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu)
                    .flatten(0, -1),
            )?;
            for (offset, vector) in flat.chunks_exact(dim).enumerate() {
                let entry = tracks
                    .entry(rows.track_id(start + offset).to_owned())
                    .or_insert_with(|| TrackSum {
                        windows: 0,
                        sum: vec![0.0; dim],
                    });
                entry.windows += 1;
                for (s, v) in entry.sum.iter_mut().zip(vector) {
                    *s += f64::from(*v);
                }
            }
            windows += end - start;
            start = end;
        }
    }

    let mut ids = Vec::with_capacity(tracks.len());
    let mut counts = Vec::with_capacity(tracks.len());
    let mut vectors = FixedSizeListBuilder::with_capacity(
        Float32Builder::with_capacity(tracks.len() * dim),
        dim as i32,
        tracks.len(),
    )
    .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
    for (id, track) in &tracks {
        let norm = track.sum.iter().map(|v| v * v).sum::<f64>().sqrt();
        // A zero vector has no direction; keep it zero rather than divide by zero
        // (the indexer rejects it with a clear error).
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for v in &track.sum {
            vectors.values().append_value((v * scale) as f32);
        }
        vectors.append(true);
        ids.push(id.as_str());
        counts.push(track.windows);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(UInt32Array::from(counts)),
        Arc::new(vectors.finish()),
    ];
    let batch = RecordBatch::try_new(embeddings_schema(dim), columns)?;
    let key = keys::embeddings_part(&request.job_id, &request.model_id, request.part);
    let options = ParquetOptions {
        metadata: vec![
            ("deepcuts.model_id".to_owned(), request.model_id.clone()),
            ("deepcuts.embedding_dim".to_owned(), dim.to_string()),
            (
                "deepcuts.source".to_owned(),
                request.spectrogram_key.clone(),
            ),
        ],
        ..Default::default()
    };
    store.write_parquet(&key, &[batch], &options)?;
    let seconds = started.elapsed().as_secs_f64();
    info!(job_id = %request.job_id, unit_id = request.part, model_id = %request.model_id, tracks = tracks.len(), windows, seconds, "embeddings written");
    Ok(EmbedOutcome {
        key,
        tracks: tracks.len(),
        windows,
        seconds,
    })
}
