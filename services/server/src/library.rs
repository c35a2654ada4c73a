//! The catalogue and neighbour table of one job and model, in memory.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use deepcuts_core::keys;
use deepcuts_core::parquet_io::{read_batches, ParquetIoError};
use deepcuts_core::storage::{ObjectStore, StoreError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Parquet(#[from] ParquetIoError),
    #[error("{key}: {message}")]
    Schema { key: String, message: String },
    #[error("job {job_id} has no catalogue pages")]
    NoCatalogue { job_id: String },
    #[error("job {job_id} has no neighbour table{}", model_hint(.models))]
    NoNeighbours { job_id: String, models: Vec<String> },
    #[error("job {job_id} has tables of several models ({}); pick one with --model", .models.join(", "))]
    AmbiguousModel { job_id: String, models: Vec<String> },
}

fn model_hint(models: &[String]) -> String {
    if models.is_empty() {
        " (run the index stage first)".to_owned()
    } else {
        format!(" for that model; models with tables: {}", models.join(", "))
    }
}

/// One track of the catalogue, as the API returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Track {
    pub track_id: String,
    pub artist: String,
    pub release_title: String,
    pub track_name: String,
    pub duration_s: Option<f64>,
    pub label: String,
    pub catalogue_number: String,
    pub release_date: String,
    pub genre: String,
    pub preview_url: String,
    pub page_url: String,
}

impl Track {
    /// "Artist - Title", as people type it.
    pub fn display_name(&self) -> String {
        format!("{} - {}", self.artist, self.track_name)
    }

    /// What identifies the release: its catalogue number, or else artist and title.
    fn release_key(&self) -> String {
        if self.catalogue_number.trim().is_empty() {
            format!(
                "{}\u{1f}{}",
                self.artist.to_lowercase(),
                self.release_title.to_lowercase()
            )
        } else {
            self.catalogue_number.trim().to_lowercase()
        }
    }
}

/// A neighbour as queries return it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neighbour<'a> {
    pub rank: usize,
    pub score: f32,
    pub track: &'a Track,
}

/// Catalogue plus neighbour table.
#[derive(Debug, Default)]
pub struct Library {
    pub job_id: String,
    pub model_id: String,
    tracks: Vec<Track>,
    by_id: HashMap<String, u32>,
    /// Per track (same order as `tracks`): neighbours best first.
    neighbours: Vec<Vec<(u32, f32)>>,
    /// Neighbours stored per track (the table's k).
    pub k_max: usize,
    /// Neighbour ids the catalogue does not know (skipped).
    pub unknown_neighbours: usize,
    /// Lowercased names per track, for search.
    search_keys: Vec<SearchKey>,
}

#[derive(Debug, Default)]
struct SearchKey {
    artist: String,
    title: String,
    release: String,
    /// "artist - title | release"
    full: String,
}

impl Library {
    /// Builds a library from parts (tests and fixtures).
    pub fn from_parts(
        job_id: &str,
        model_id: &str,
        tracks: Vec<Track>,
        table: Vec<(String, Vec<(String, f32)>)>,
    ) -> Self {
        let by_id: HashMap<String, u32> = tracks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.track_id.clone(), i as u32))
            .collect();
        let mut neighbours = vec![Vec::new(); tracks.len()];
        let mut unknown = 0;
        let mut k_max = 0;
        for (track_id, list) in table {
            let Some(&row) = by_id.get(&track_id) else {
                unknown += 1;
                continue;
            };
            let resolved: Vec<(u32, f32)> = list
                .iter()
                .filter_map(|(id, score)| by_id.get(id).map(|&n| (n, *score)))
                .collect();
            unknown += list.len() - resolved.len();
            k_max = k_max.max(list.len());
            neighbours[row as usize] = resolved;
        }
        let search_keys = tracks
            .iter()
            .map(|t| SearchKey {
                artist: t.artist.to_lowercase(),
                title: t.track_name.to_lowercase(),
                release: t.release_title.to_lowercase(),
                full: format!("{} - {} | {}", t.artist, t.track_name, t.release_title)
                    .to_lowercase(),
            })
            .collect();
        Self {
            job_id: job_id.to_owned(),
            model_id: model_id.to_owned(),
            tracks,
            by_id,
            neighbours,
            k_max,
            unknown_neighbours: unknown,
            search_keys,
        }
    }

    /// Loads `jobs/<job>/catalogue/page=*.parquet` and the neighbour table
    /// of `model_id` (or of the job's only model).
    pub async fn load(
        store: &dyn ObjectStore,
        job_id: &str,
        model_id: Option<&str>,
    ) -> Result<Self, LibraryError> {
        let models = models_with_tables(store, job_id).await?;
        let model_id = match model_id {
            Some(m) if models.iter().any(|x| x == m) => m.to_owned(),
            Some(_) => {
                return Err(LibraryError::NoNeighbours {
                    job_id: job_id.to_owned(),
                    models,
                })
            }
            None => match &models[..] {
                [only] => only.clone(),
                [] => {
                    return Err(LibraryError::NoNeighbours {
                        job_id: job_id.to_owned(),
                        models,
                    })
                }
                _ => {
                    return Err(LibraryError::AmbiguousModel {
                        job_id: job_id.to_owned(),
                        models,
                    })
                }
            },
        };
        let mut tracks = Vec::new();
        let pages = store.list(&keys::catalogue_prefix(job_id)).await?;
        for key in pages.iter().filter(|k| k.ends_with(".parquet")) {
            for batch in read_batches(store, key).await? {
                read_tracks(key, &batch, &mut tracks)?;
            }
        }
        if tracks.is_empty() {
            return Err(LibraryError::NoCatalogue {
                job_id: job_id.to_owned(),
            });
        }
        let mut table = Vec::new();
        let prefix = keys::neighbours_prefix(job_id, &model_id);
        for key in store.list(&prefix).await? {
            let name = &key[prefix.len()..];
            if !(name.starts_with("block=") && name.ends_with(".parquet")) {
                continue;
            }
            for batch in read_batches(store, &key).await? {
                read_neighbours(&key, &batch, &mut table)?;
            }
        }
        Ok(Self::from_parts(job_id, &model_id, tracks, table))
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn track(&self, track_id: &str) -> Option<&Track> {
        self.by_id.get(track_id).map(|&i| &self.tracks[i as usize])
    }

    /// Tracks matching `query`, best first: an exact track id, then
    /// "artist - title" matches (case-insensitive substrings; a match at the
    /// start of the name or on both artist and title ranks higher).
    pub fn search(&self, query: &str, limit: usize) -> Vec<&Track> {
        let query = query.trim();
        if query.is_empty() {
            return Vec::new();
        }
        let exact = self.by_id.get(query).map(|&row| row as usize);
        let needle = query.to_lowercase();
        let split = needle
            .split_once(" - ")
            .map(|(a, t)| (a.trim().to_owned(), t.trim().to_owned()));
        // (rank, name length, row): lower is better.
        let mut hits: Vec<(u8, usize, usize)> = exact.iter().map(|&row| (0, 0, row)).collect();
        for (row, key) in self.search_keys.iter().enumerate() {
            if Some(row) == exact {
                continue;
            }
            let both_hit = split.as_ref().is_some_and(|(artist, title)| {
                key.artist.contains(artist.as_str())
                    && (key.title.contains(title.as_str()) || key.release.contains(title.as_str()))
            });
            let rank = if key.full.starts_with(&needle) {
                1
            } else if both_hit || key.title.starts_with(&needle) || key.artist.starts_with(&needle)
            {
                2
            } else if key.full.contains(&needle) {
                3
            } else {
                continue;
            };
            hits.push((rank, key.full.len(), row));
        }
        hits.sort_unstable();
        hits.into_iter()
            .take(limit)
            .map(|(_, _, row)| &self.tracks[row])
            .collect()
    }

    /// The `k` nearest neighbours of `track_id`. With `diverse`, at most one
    /// track per release and per artist (the query track's own release and
    /// artist count as taken), drawn from the whole stored list.
    pub fn similar(&self, track_id: &str, k: usize, diverse: bool) -> Option<Vec<Neighbour<'_>>> {
        let &row = self.by_id.get(track_id)?;
        let seed = &self.tracks[row as usize];
        let mut releases = vec![seed.release_key()];
        let mut artists = vec![seed.artist.trim().to_lowercase()];
        let mut out = Vec::with_capacity(k);
        for &(other, score) in &self.neighbours[row as usize] {
            if out.len() == k {
                break;
            }
            let track = &self.tracks[other as usize];
            if diverse {
                let release = track.release_key();
                let artist = track.artist.trim().to_lowercase();
                if releases.contains(&release) || artists.contains(&artist) {
                    continue;
                }
                releases.push(release);
                artists.push(artist);
            }
            out.push(Neighbour {
                rank: out.len() + 1,
                score,
                track,
            });
        }
        Some(out)
    }
}

/// Models that have a neighbour table for the job.
pub async fn models_with_tables(
    store: &dyn ObjectStore,
    job_id: &str,
) -> Result<Vec<String>, LibraryError> {
    let prefix = format!("jobs/{job_id}/neighbours/");
    let mut models: Vec<String> = store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|key| key[prefix.len()..].split('/').next())
        .filter_map(|dir| dir.strip_prefix("model="))
        .map(str::to_owned)
        .collect();
    models.dedup();
    Ok(models)
}

fn schema_error(key: &str, message: impl Into<String>) -> LibraryError {
    LibraryError::Schema {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Text of a string column (utf8 or large utf8); empty for nulls.
fn text(column: &ArrayRef, row: usize) -> String {
    if column.is_null(row) {
        return String::new();
    }
    match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(row).to_owned(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(row).to_owned(),
        DataType::Utf8View => column.as_string_view().value(row).to_owned(),
        _ => String::new(),
    }
}

fn number(column: &ArrayRef, row: usize) -> Option<f64> {
    if column.is_null(row) {
        return None;
    }
    match column.data_type() {
        DataType::Float64 => Some(column.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => Some(column.as_primitive::<Float32Type>().value(row) as f64),
        DataType::UInt32 => Some(column.as_primitive::<UInt32Type>().value(row) as f64),
        DataType::Int32 => Some(column.as_primitive::<Int32Type>().value(row) as f64),
        DataType::Int64 => Some(column.as_primitive::<Int64Type>().value(row) as f64),
        _ => None,
    }
}

fn read_tracks(
    key: &str,
    batch: &RecordBatch,
    tracks: &mut Vec<Track>,
) -> Result<(), LibraryError> {
    let ids = batch
        .column_by_name("track_id")
        .ok_or_else(|| schema_error(key, "no track_id column"))?;
    let column = |name: &str| batch.column_by_name(name);
    let field = |name: &str, row: usize| column(name).map(|c| text(c, row)).unwrap_or_default();
    for row in 0..batch.num_rows() {
        let track_id = text(ids, row);
        if track_id.is_empty() {
            continue;
        }
        tracks.push(Track {
            track_id,
            artist: field("artist", row),
            release_title: field("release_title", row),
            track_name: field("track_name", row),
            duration_s: column("duration_s").and_then(|c| number(c, row)),
            label: field("label", row),
            catalogue_number: field("catalogue_number", row),
            release_date: field("release_date", row),
            genre: field("genre", row),
            preview_url: field("preview_url", row),
            page_url: field("page_url", row),
        });
    }
    Ok(())
}

fn read_neighbours(
    key: &str,
    batch: &RecordBatch,
    table: &mut Vec<(String, Vec<(String, f32)>)>,
) -> Result<(), LibraryError> {
    let ids = batch
        .column_by_name("track_id")
        .ok_or_else(|| schema_error(key, "no track_id column"))?;
    let neighbours = batch
        .column_by_name("neighbour_ids")
        .and_then(|c| c.as_list_opt::<i32>())
        .ok_or_else(|| schema_error(key, "no neighbour_ids list column"))?;
    let scores = batch
        .column_by_name("scores")
        .and_then(|c| c.as_list_opt::<i32>())
        .ok_or_else(|| schema_error(key, "no scores list column"))?;
    for row in 0..batch.num_rows() {
        let names = neighbours.value(row);
        let values = scores.value(row);
        let values = values
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(|| schema_error(key, "scores are not f32"))?;
        if names.len() != values.len() {
            return Err(schema_error(
                key,
                format!("row {row}: ids and scores differ in length"),
            ));
        }
        let list = (0..names.len())
            .map(|i| (text(&names, i), values.value(i)))
            .collect();
        table.push((text(ids, row), list));
    }
    Ok(())
}
