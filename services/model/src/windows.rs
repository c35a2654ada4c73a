//! The data contract with the transcoder: how spectrogram windows are stored.
//!
//! A window file (`jobs/<job>/spectrograms/batch=<id>.parquet`, written by
//! `deepcuts-transcoder`) has one row per window:
//!
//! | column       | type                         | meaning                                     |
//! |--------------|------------------------------|---------------------------------------------|
//! | track_id     | Utf8                         | catalogue track id                          |
//! | window_index | UInt32                       | 0-based position of the window in its track |
//! | start_s      | Float32                      | window start in seconds (not needed here)   |
//! | window       | FixedSizeBinary(bins·frames) | u8 image, `bins` rows × `frames` columns    |
//!
//! The image is frequency-major: row `b` (lowest frequency first) holds the
//! `frames` consecutive columns of bin `b`, so byte `b * frames + t` is bin
//! `b` at frame `t`; a window read as a `[bins, frames]` tensor needs no
//! transpose. The `seed` preset keeps this orientation (sox's images put the
//! highest frequency on top): flipping the rows of every input is an exact
//! symmetry of the seed network (every conv and pool tiles 256 rows evenly),
//! so it changes nothing it can learn.
//!
//! The Arrow schema metadata (stored in the Parquet footer's `ARROW:schema`)
//! carries `deepcuts.frontend` (the front-end config as JSON),
//! `deepcuts.window_shape` (`"<bins>x<frames>"`) and `deepcuts.db_scale`. The
//! same keys are also accepted as plain Parquet key-value metadata.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use deepcuts_core::parquet_io::ParquetFile;

use crate::error::ModelError;

/// Column names of window files and (for `track_id` and `genre`) catalogue pages.
pub mod columns {
    pub const TRACK_ID: &str = "track_id";
    pub const WINDOW_INDEX: &str = "window_index";
    pub const START_S: &str = "start_s";
    pub const WINDOW: &str = "window";
    /// The catalogue's genre label (absent for folder sources).
    pub const GENRE: &str = "genre";
}

/// Metadata keys of window files.
pub mod meta {
    /// The front-end config as JSON.
    pub const FRONTEND: &str = "deepcuts.frontend";
    /// `"<bins>x<frames>"`.
    pub const WINDOW_SHAPE: &str = "deepcuts.window_shape";
    /// `{"min_db":..,"step_db":..}`: how a u8 maps back to dB.
    pub const DB_SCALE: &str = "deepcuts.db_scale";
}

/// Rows and columns of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowShape {
    /// Frequency rows (mel bands or linear bins).
    pub bands: usize,
    /// Time columns.
    pub frames: usize,
}

impl WindowShape {
    pub fn len(&self) -> usize {
        self.bands * self.frames
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses `"<bins>x<frames>"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (bands, frames) = text.trim().split_once('x')?;
        let shape = Self {
            bands: bands.trim().parse().ok()?,
            frames: frames.trim().parse().ok()?,
        };
        (!shape.is_empty()).then_some(shape)
    }

    /// The shape a front-end config describes: the transcoder's
    /// `scale.n_mels` / `scale.bins` and `window_frames`.
    pub fn from_frontend(frontend: &serde_json::Value) -> Option<Self> {
        let number = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_u64()).map(|v| v as usize);
        let scale = frontend.get("scale");
        let bands = number(scale.and_then(|s| s.get("n_mels")))
            .or_else(|| number(scale.and_then(|s| s.get("bins"))))
            // Flat configs (test fixtures) name the rows directly.
            .or_else(|| number(frontend.get("bands")))?;
        let frames =
            number(frontend.get("window_frames")).or_else(|| number(frontend.get("frames")))?;
        let shape = Self { bands, frames };
        (!shape.is_empty()).then_some(shape)
    }
}

/// What a window file says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    pub shape: WindowShape,
    /// The front-end config, when the file records one.
    pub frontend: Option<serde_json::Value>,
}

/// Reads the shape and front-end of a decoded window file. The shape comes
/// from `deepcuts.window_shape`, else the front-end config, else `fallback`;
/// it must agree with the width of the `window` column.
pub fn part_info(
    key: &str,
    file: &ParquetFile,
    fallback: Option<WindowShape>,
) -> Result<PartInfo, ModelError> {
    let bad = |reason: String| ModelError::BadInput {
        key: key.to_owned(),
        reason,
    };
    let lookup = |name: &str| -> Option<&String> {
        file.schema
            .metadata()
            .get(name)
            .or_else(|| file.metadata.get(name))
    };
    let frontend = match lookup(meta::FRONTEND) {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| bad(format!("{} is not JSON: {e}", meta::FRONTEND)))?,
        ),
        None => None,
    };
    let shape = match lookup(meta::WINDOW_SHAPE) {
        Some(text) => Some(WindowShape::parse(text).ok_or_else(|| {
            bad(format!(
                "{} is {text:?}, not <bins>x<frames>",
                meta::WINDOW_SHAPE
            ))
        })?),
        None => frontend.as_ref().and_then(WindowShape::from_frontend),
    }
    .or(fallback)
    .ok_or_else(|| {
        bad("no window shape: neither deepcuts.window_shape nor a front-end config".into())
    })?;
    if let Ok(field) = file.schema.field_with_name(columns::WINDOW) {
        if let DataType::FixedSizeBinary(width) = field.data_type() {
            if *width as usize != shape.len() {
                return Err(bad(format!(
                    "windows are {width} bytes but the metadata says {}x{}",
                    shape.bands, shape.frames
                )));
            }
        }
    }
    Ok(PartInfo { shape, frontend })
}

/// Metadata for a window file written outside the transcoder (tests,
/// fixtures), in the transcoder's keys.
pub fn part_metadata(shape: WindowShape, frontend: &serde_json::Value) -> HashMap<String, String> {
    HashMap::from([
        (meta::FRONTEND.to_owned(), frontend.to_string()),
        (
            meta::WINDOW_SHAPE.to_owned(),
            format!("{}x{}", shape.bands, shape.frames),
        ),
    ])
}

/// A string column of any Arrow string type.
pub fn string_column<'a>(
    key: &str,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<StringColumn<'a>, ModelError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| ModelError::BadInput {
            key: key.to_owned(),
            reason: format!("no column {name}"),
        })?;
    match column.data_type() {
        DataType::Utf8 => Ok(StringColumn::Small(column.as_string::<i32>())),
        DataType::LargeUtf8 => Ok(StringColumn::Large(column.as_string::<i64>())),
        DataType::Utf8View => Ok(StringColumn::View(column.as_string_view())),
        other => Err(ModelError::BadInput {
            key: key.to_owned(),
            reason: format!("column {name} is {other}, not a string"),
        }),
    }
}

/// A string column of any of Arrow's string types.
pub enum StringColumn<'a> {
    Small(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
}

impl StringColumn<'_> {
    pub fn value(&self, i: usize) -> &str {
        match self {
            Self::Small(a) => a.value(i),
            Self::Large(a) => a.value(i),
            Self::View(a) => a.value(i),
        }
    }
    pub fn is_valid(&self, i: usize) -> bool {
        match self {
            Self::Small(a) => a.is_valid(i),
            Self::Large(a) => a.is_valid(i),
            Self::View(a) => a.is_valid(i),
        }
    }
}

/// Typed access to the rows of one spectrogram record batch.
pub struct PartRows<'a> {
    track_ids: StringColumn<'a>,
    window_index: Option<Vec<u32>>,
    windows: WindowColumn<'a>,
}

enum WindowColumn<'a> {
    Fixed(&'a arrow_array::FixedSizeBinaryArray),
    Binary(&'a arrow_array::BinaryArray),
    LargeBinary(&'a arrow_array::LargeBinaryArray),
}

impl<'a> PartRows<'a> {
    /// Checks the columns and that every window has `window_len` bytes.
    pub fn new(key: &str, batch: &'a RecordBatch, window_len: usize) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::BadInput {
            key: key.to_owned(),
            reason,
        };
        let track_ids = string_column(key, batch, columns::TRACK_ID)?;
        let column = batch
            .column_by_name(columns::WINDOW)
            .ok_or_else(|| bad(format!("no column {}", columns::WINDOW)))?;
        let windows = match column.data_type() {
            DataType::FixedSizeBinary(_) => WindowColumn::Fixed(column.as_fixed_size_binary()),
            DataType::Binary => WindowColumn::Binary(column.as_binary::<i32>()),
            DataType::LargeBinary => WindowColumn::LargeBinary(column.as_binary::<i64>()),
            other => {
                return Err(bad(format!(
                    "column {} is {other}, not binary",
                    columns::WINDOW
                )))
            }
        };
        let window_index = match batch.column_by_name(columns::WINDOW_INDEX) {
            None => None,
            Some(c) => Some(match c.data_type() {
                DataType::UInt32 => c.as_primitive::<UInt32Type>().values().to_vec(),
                DataType::UInt16 => c
                    .as_primitive::<UInt16Type>()
                    .values()
                    .iter()
                    .map(|&v| u32::from(v))
                    .collect(),
                DataType::UInt64 => c
                    .as_primitive::<UInt64Type>()
                    .values()
                    .iter()
                    .map(|&v| v as u32)
                    .collect(),
                DataType::Int32 => c
                    .as_primitive::<arrow_array::types::Int32Type>()
                    .values()
                    .iter()
                    .map(|&v| v as u32)
                    .collect(),
                DataType::Int64 => c
                    .as_primitive::<arrow_array::types::Int64Type>()
                    .values()
                    .iter()
                    .map(|&v| v as u32)
                    .collect(),
                other => {
                    return Err(bad(format!(
                        "column {} is {other}, not an integer",
                        columns::WINDOW_INDEX
                    )))
                }
            }),
        };
        let rows = Self {
            track_ids,
            window_index,
            windows,
        };
        for i in 0..batch.num_rows() {
            if !rows.track_ids.is_valid(i) {
                return Err(bad(format!("row {i} has no track id")));
            }
            let len = rows.window(i).len();
            if len != window_len {
                return Err(bad(format!(
                    "row {i} holds {len} bytes, expected a {window_len}-byte window"
                )));
            }
        }
        Ok(rows)
    }

    pub fn track_id(&self, row: usize) -> &str {
        self.track_ids.value(row)
    }

    /// The window's position in its track (row order when the column is absent).
    pub fn window_index(&self, row: usize) -> u32 {
        self.window_index.as_ref().map_or(row as u32, |v| v[row])
    }

    pub fn window(&self, row: usize) -> &'a [u8] {
        match &self.windows {
            WindowColumn::Fixed(a) => a.value(row),
            WindowColumn::Binary(a) => a.value(row),
            WindowColumn::LargeBinary(a) => a.value(row),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_reads_the_transcoder_frontend_json() {
        let mel = serde_json::json!({
            "preset": "default", "sample_rate": 22050,
            "scale": {"kind": "mel", "n_mels": 128, "fmin": 0.0, "fmax": null, "htk": false, "norm": "slaney"},
            "window_frames": 256, "window_hop_frames": 256
        });
        assert_eq!(
            WindowShape::from_frontend(&mel),
            Some(WindowShape {
                bands: 128,
                frames: 256
            })
        );
        let seed = serde_json::json!({"preset": "seed", "scale": {"kind": "linear", "bins": 256}, "window_frames": 256});
        assert_eq!(
            WindowShape::from_frontend(&seed),
            Some(WindowShape {
                bands: 256,
                frames: 256
            })
        );
        assert_eq!(
            WindowShape::from_frontend(&serde_json::json!({"sample_rate": 22050})),
            None
        );
        assert_eq!(
            WindowShape::parse("128x256"),
            Some(WindowShape {
                bands: 128,
                frames: 256
            })
        );
        assert_eq!(WindowShape::parse("128by256"), None);
        assert_eq!(WindowShape::parse("0x256"), None);
    }
}
