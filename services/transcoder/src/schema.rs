//! The Parquet artefacts this service writes, one place per artefact.
//!
//! ## Windows: `jobs/<job>/spectrograms/batch=<id>.parquet`
//! One row per window, rows ordered by (track order in the task, window_index).
//!
//! | column        | type                          | meaning                                   |
//! |---------------|-------------------------------|-------------------------------------------|
//! | track_id      | Utf8                          | catalogue track id                        |
//! | window_index  | UInt32                        | 0-based position of the window in its track |
//! | start_s       | Float32                       | window start, seconds from the track start |
//! | window        | FixedSizeBinary(bins·frames)  | u8 image, `bins` rows (lowest frequency first) × `frames` columns |
//!
//! Schema metadata: `deepcuts.frontend` (the [`FrontendConfig`] as JSON),
//! `deepcuts.db_scale` (`{"min_db":..,"step_db":..}`: dB relative to the
//! track's loudest bin = `min_db + value * step_db`), `deepcuts.window_shape`
//! (`"<bins>x<frames>"`).
//!
//! ## Track summary: `jobs/<job>/spectrogram_summaries/batch=<id>.parquet`
//! One row per track that produced windows (failed tracks get failure records
//! under `jobs/<job>/failures/transcode/` instead). Kept outside the
//! `spectrograms/` prefix so readers listing window files never meet it.
//!
//! | column             | type    | meaning                                         |
//! |--------------------|---------|-------------------------------------------------|
//! | track_id           | Utf8    |                                                 |
//! | duration_s         | Float64 | decoded duration                                |
//! | windows            | UInt32  | rows of this track in the windows file          |
//! | packets            | UInt64  | packets read                                    |
//! | bad_packets        | UInt64  | packets skipped as undecodable                  |
//! | source_sample_rate | UInt32  |                                                 |
//! | source_channels    | UInt32  |                                                 |
//! | codec              | Utf8    | e.g. "mp3"                                      |
//! | ref_db             | Float32 | absolute dB of the loudest bin (`10·log10 max power`) |

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, StringBuilder, UInt32Builder,
    UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::frontend::FrontendConfig;
use crate::pipeline::TrackOutput;

pub mod windows {
    pub const TRACK_ID: &str = "track_id";
    pub const WINDOW_INDEX: &str = "window_index";
    pub const START_S: &str = "start_s";
    pub const WINDOW: &str = "window";
    pub const META_FRONTEND: &str = "deepcuts.frontend";
    pub const META_DB_SCALE: &str = "deepcuts.db_scale";
    pub const META_WINDOW_SHAPE: &str = "deepcuts.window_shape";
}

pub mod summary {
    pub const TRACK_ID: &str = "track_id";
    pub const DURATION_S: &str = "duration_s";
    pub const WINDOWS: &str = "windows";
    pub const PACKETS: &str = "packets";
    pub const BAD_PACKETS: &str = "bad_packets";
    pub const SOURCE_SAMPLE_RATE: &str = "source_sample_rate";
    pub const SOURCE_CHANNELS: &str = "source_channels";
    pub const CODEC: &str = "codec";
    pub const REF_DB: &str = "ref_db";
}

/// Key of a batch's track summary (see the module docs).
pub fn summary_key(job_id: &str, batch_id: &str) -> String {
    format!("jobs/{job_id}/spectrogram_summaries/batch={batch_id}.parquet")
}

pub fn windows_schema(config: &FrontendConfig) -> SchemaRef {
    let metadata = HashMap::from([
        (windows::META_FRONTEND.to_string(), config.to_json()),
        (
            windows::META_DB_SCALE.to_string(),
            serde_json::to_string(&config.db_scale()).unwrap_or_default(),
        ),
        (
            windows::META_WINDOW_SHAPE.to_string(),
            format!("{}x{}", config.n_bins(), config.window_frames),
        ),
    ]);
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new(windows::TRACK_ID, DataType::Utf8, false),
            Field::new(windows::WINDOW_INDEX, DataType::UInt32, false),
            Field::new(windows::START_S, DataType::Float32, false),
            Field::new(
                windows::WINDOW,
                DataType::FixedSizeBinary(config.window_bytes() as i32),
                false,
            ),
        ],
        metadata,
    ))
}

pub fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(summary::TRACK_ID, DataType::Utf8, false),
        Field::new(summary::DURATION_S, DataType::Float64, false),
        Field::new(summary::WINDOWS, DataType::UInt32, false),
        Field::new(summary::PACKETS, DataType::UInt64, false),
        Field::new(summary::BAD_PACKETS, DataType::UInt64, false),
        Field::new(summary::SOURCE_SAMPLE_RATE, DataType::UInt32, false),
        Field::new(summary::SOURCE_CHANNELS, DataType::UInt32, false),
        Field::new(summary::CODEC, DataType::Utf8, false),
        Field::new(summary::REF_DB, DataType::Float32, false),
    ]))
}

/// The windows of several tracks as one record batch.
pub fn windows_batch(
    config: &FrontendConfig,
    tracks: &[(String, TrackOutput)],
) -> Result<RecordBatch, ArrowError> {
    let rows: usize = tracks.iter().map(|(_, t)| t.windows.len()).sum();
    let width = config.window_bytes() as i32;
    let mut ids = StringBuilder::with_capacity(rows, rows * 16);
    let mut index = UInt32Builder::with_capacity(rows);
    let mut start = Float32Builder::with_capacity(rows);
    let mut data = FixedSizeBinaryBuilder::with_capacity(rows, width);
    for (track_id, output) in tracks {
        for window in &output.windows {
            ids.append_value(track_id);
            index.append_value(window.index);
            start.append_value(window.start_s as f32);
            data.append_value(&window.data)?;
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(index.finish()),
        Arc::new(start.finish()),
        Arc::new(data.finish()),
    ];
    RecordBatch::try_new(windows_schema(config), columns)
}

pub fn summary_batch(tracks: &[(String, TrackOutput)]) -> Result<RecordBatch, ArrowError> {
    let n = tracks.len();
    let mut ids = StringBuilder::with_capacity(n, n * 16);
    let mut duration = Float64Builder::with_capacity(n);
    let mut windows = UInt32Builder::with_capacity(n);
    let mut packets = UInt64Builder::with_capacity(n);
    let mut bad = UInt64Builder::with_capacity(n);
    let mut rate = UInt32Builder::with_capacity(n);
    let mut channels = UInt32Builder::with_capacity(n);
    let mut codec = StringBuilder::with_capacity(n, n * 4);
    let mut ref_db = Float32Builder::with_capacity(n);
    for (track_id, output) in tracks {
        let s = &output.stats;
        ids.append_value(track_id);
        duration.append_value(s.duration_s);
        windows.append_value(s.windows);
        packets.append_value(s.packets);
        bad.append_value(s.bad_packets);
        rate.append_value(s.source_sample_rate);
        channels.append_value(s.source_channels);
        codec.append_value(&s.codec);
        ref_db.append_value(s.ref_db);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(duration.finish()),
        Arc::new(windows.finish()),
        Arc::new(packets.finish()),
        Arc::new(bad.finish()),
        Arc::new(rate.finish()),
        Arc::new(channels.finish()),
        Arc::new(codec.finish()),
        Arc::new(ref_db.finish()),
    ];
    RecordBatch::try_new(summary_schema(), columns)
}
