//! A tiny synthetic catalogue for tests and smoke runs: genres whose windows
//! differ in which bands carry energy, written exactly as the crawler and the
//! transcoder write theirs (columns, window layout, schema metadata).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, FixedSizeBinaryArray, Float32Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use deepcuts_core::keys;
use deepcuts_core::parquet_io::ParquetOptions;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use deepcuts_model::store::BlockingStore;
use deepcuts_model::windows::{columns, part_metadata, WindowShape};

use crate::error::TrainError;

/// Shape of a synthetic catalogue.
#[derive(Debug, Clone)]
pub struct TinyCatalogue {
    pub job_id: String,
    pub genres: usize,
    pub tracks_per_genre: usize,
    pub windows_per_track: usize,
    pub bands: usize,
    pub frames: usize,
    /// Tracks per spectrogram part.
    pub tracks_per_part: usize,
    pub seed: u64,
}

impl TinyCatalogue {
    pub fn track_ids(&self) -> Vec<String> {
        (0..self.genres * self.tracks_per_genre)
            .map(|i| format!("t{i:04}"))
            .collect()
    }

    /// Writes the catalogue page and the spectrogram parts; returns the part keys.
    pub fn write(&self, store: &BlockingStore) -> Result<Vec<String>, TrainError> {
        let ids = self.track_ids();
        let genres: Vec<String> = (0..ids.len())
            .map(|i| format!("genre-{}", i % self.genres))
            .collect();
        let catalogue = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new(columns::TRACK_ID, DataType::Utf8, false),
                Field::new(columns::GENRE, DataType::Utf8, true),
            ])),
            vec![
                Arc::new(StringArray::from(ids.clone())) as ArrayRef,
                Arc::new(StringArray::from(genres)),
            ],
        )
        .map_err(|e| TrainError::Config(e.to_string()))?;
        store.write_parquet(
            &keys::catalogue_page(&self.job_id, 1),
            &[catalogue],
            &ParquetOptions::default(),
        )?;

        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let window_len = self.bands * self.frames;
        // Shaped like the transcoder's front-end config (only the geometry matters).
        let frontend = serde_json::json!({
            "preset": "tiny",
            "sample_rate": 22050,
            "hop_length": 441,
            "scale": { "kind": "mel", "n_mels": self.bands },
            "window_frames": self.frames,
            "window_hop_frames": self.frames,
        });
        let shape = WindowShape {
            bands: self.bands,
            frames: self.frames,
        };
        let schema = Arc::new(Schema::new_with_metadata(
            vec![
                Field::new(columns::TRACK_ID, DataType::Utf8, false),
                Field::new(columns::WINDOW_INDEX, DataType::UInt32, false),
                Field::new(columns::START_S, DataType::Float32, false),
                Field::new(
                    columns::WINDOW,
                    DataType::FixedSizeBinary(window_len as i32),
                    false,
                ),
            ],
            part_metadata(shape, &frontend),
        ));
        let mut keys_written = Vec::new();
        for (part, chunk) in ids.chunks(self.tracks_per_part.max(1)).enumerate() {
            let (mut tid, mut widx, mut start, mut pixels) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for id in chunk {
                let n: usize = id[1..].parse().unwrap_or(0);
                let genre = n % self.genres;
                for w in 0..self.windows_per_track {
                    let mut window = vec![0u8; window_len];
                    for (i, px) in window.iter_mut().enumerate() {
                        let band = i / self.frames;
                        // Each genre lights its own stripe of bands, over noise.
                        let lit = band * self.genres / self.bands == genre;
                        *px = if lit { 160 } else { 40 } + rng.random_range(0..60);
                    }
                    tid.push(id.clone());
                    widx.push(w as u32);
                    start.push(w as f32 * self.frames as f32 / 50.0);
                    pixels.push(window);
                }
            }
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(tid)) as ArrayRef,
                    Arc::new(UInt32Array::from(widx)),
                    Arc::new(Float32Array::from(start)),
                    Arc::new(
                        FixedSizeBinaryArray::try_from_iter(pixels.into_iter())
                            .map_err(|e| TrainError::Config(e.to_string()))?,
                    ),
                ],
            )
            .map_err(|e| TrainError::Config(e.to_string()))?;
            let key = keys::spectrogram_batch(&self.job_id, &format!("{part:05}"));
            store.write_parquet(&key, &[batch], &ParquetOptions::default())?;
            keys_written.push(key);
        }
        Ok(keys_written)
    }
}
