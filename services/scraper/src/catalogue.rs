//! Catalogue rows and their Arrow form (one Parquet file per listing page).

use std::sync::Arc;

use arrow_array::builder::{Date32Builder, StringBuilder, UInt32Builder};
use arrow_array::{Array, ArrayRef, Date32Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Column names of the catalogue Parquet; later stages read these.
pub mod columns {
    pub const TRACK_ID: &str = "track_id";
    pub const ARTIST: &str = "artist";
    pub const RELEASE_TITLE: &str = "release_title";
    pub const TRACK_NAME: &str = "track_name";
    pub const DURATION_S: &str = "duration_s";
    pub const LABEL: &str = "label";
    pub const CATALOGUE_NUMBER: &str = "catalogue_number";
    pub const RELEASE_DATE: &str = "release_date";
    pub const GENRE: &str = "genre";
    pub const PREVIEW_URL: &str = "preview_url";
    pub const PAGE_URL: &str = "page_url";
}

/// One track of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueRow {
    /// 16 hex digits derived from the preview URL's path (see `normalise::track_id`).
    pub track_id: String,
    pub artist: String,
    pub release_title: String,
    pub track_name: String,
    pub duration_s: Option<u32>,
    pub label: Option<String>,
    pub catalogue_number: Option<String>,
    pub release_date: Option<NaiveDate>,
    pub genre: Option<String>,
    pub preview_url: String,
    pub page_url: String,
}

pub fn schema() -> SchemaRef {
    use columns::*;
    Arc::new(Schema::new(vec![
        Field::new(TRACK_ID, DataType::Utf8, false),
        Field::new(ARTIST, DataType::Utf8, false),
        Field::new(RELEASE_TITLE, DataType::Utf8, false),
        Field::new(TRACK_NAME, DataType::Utf8, false),
        Field::new(DURATION_S, DataType::UInt32, true),
        Field::new(LABEL, DataType::Utf8, true),
        Field::new(CATALOGUE_NUMBER, DataType::Utf8, true),
        Field::new(RELEASE_DATE, DataType::Date32, true),
        Field::new(GENRE, DataType::Utf8, true),
        Field::new(PREVIEW_URL, DataType::Utf8, false),
        Field::new(PAGE_URL, DataType::Utf8, false),
    ]))
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid constant date")
}

/// Rows to one record batch in the catalogue schema.
pub fn to_batch(rows: &[CatalogueRow]) -> Result<RecordBatch, ArrowError> {
    let strings = |get: &dyn Fn(&CatalogueRow) -> Option<&str>| -> ArrayRef {
        let mut builder = StringBuilder::with_capacity(rows.len(), rows.len() * 24);
        for row in rows {
            builder.append_option(get(row));
        }
        Arc::new(builder.finish())
    };
    let mut durations = UInt32Builder::with_capacity(rows.len());
    let mut dates = Date32Builder::with_capacity(rows.len());
    for row in rows {
        durations.append_option(row.duration_s);
        dates.append_option(row.release_date.map(|d| (d - epoch()).num_days() as i32));
    }
    RecordBatch::try_new(
        schema(),
        vec![
            strings(&|r| Some(&r.track_id)),
            strings(&|r| Some(&r.artist)),
            strings(&|r| Some(&r.release_title)),
            strings(&|r| Some(&r.track_name)),
            Arc::new(durations.finish()),
            strings(&|r| r.label.as_deref()),
            strings(&|r| r.catalogue_number.as_deref()),
            Arc::new(dates.finish()),
            strings(&|r| r.genre.as_deref()),
            strings(&|r| Some(&r.preview_url)),
            strings(&|r| Some(&r.page_url)),
        ],
    )
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("catalogue has no column {name}")))?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| {
            ArrowError::SchemaError(format!("catalogue column {name} has the wrong type"))
        })
}

/// A record batch in the catalogue schema back to rows.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<CatalogueRow>, ArrowError> {
    use columns::*;
    let text = |name| column::<StringArray>(batch, name);
    let (ids, artists, titles, names) = (
        text(TRACK_ID)?,
        text(ARTIST)?,
        text(RELEASE_TITLE)?,
        text(TRACK_NAME)?,
    );
    let (labels, catalogue_numbers, genres) = (text(LABEL)?, text(CATALOGUE_NUMBER)?, text(GENRE)?);
    let (previews, pages) = (text(PREVIEW_URL)?, text(PAGE_URL)?);
    let durations = column::<UInt32Array>(batch, DURATION_S)?;
    let dates = column::<Date32Array>(batch, RELEASE_DATE)?;
    let optional = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
    Ok((0..batch.num_rows())
        .map(|i| CatalogueRow {
            track_id: ids.value(i).to_string(),
            artist: artists.value(i).to_string(),
            release_title: titles.value(i).to_string(),
            track_name: names.value(i).to_string(),
            duration_s: (!durations.is_null(i)).then(|| durations.value(i)),
            label: optional(labels, i),
            catalogue_number: optional(catalogue_numbers, i),
            release_date: (!dates.is_null(i))
                .then(|| epoch() + chrono::Days::new(dates.value(i).max(0) as u64)),
            genre: optional(genres, i),
            preview_url: previews.value(i).to_string(),
            page_url: pages.value(i).to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_arrow() {
        let rows = vec![
            CatalogueRow {
                track_id: "0123456789abcdef".into(),
                artist: "CLEAR VIEW feat JESSICA".into(),
                release_title: "Tell Me".into(),
                track_name: "Tell Me".into(),
                duration_s: Some(403),
                label: Some("Songbird Holland".into()),
                catalogue_number: Some("SB 215-0".into()),
                release_date: NaiveDate::from_ymd_opt(2008, 9, 10),
                genre: Some("Progressive House".into()),
                preview_url: "http://s/MP3/a.mp3".into(),
                page_url: "http://s/".into(),
            },
            CatalogueRow {
                track_id: "fedcba9876543210".into(),
                artist: "A".into(),
                release_title: "B".into(),
                track_name: "C".into(),
                duration_s: None,
                label: None,
                catalogue_number: None,
                release_date: None,
                genre: None,
                preview_url: "file:///music/a.mp3".into(),
                page_url: "file:///music/".into(),
            },
        ];
        let batch = to_batch(&rows).unwrap();
        assert_eq!(batch.num_columns(), 11);
        assert_eq!(from_batch(&batch).unwrap(), rows);
    }
}
