//! A second catalogue source: a folder of the user's own audio files.
//!
//! Every audio file becomes one catalogue row with a `file://` preview URL. The genre
//! comes from the first subfolder under the root (`root/Trance/x.mp3` is Trance) or
//! from the file's genre tag, in the order `GenreSource` says.

use std::path::{Path, PathBuf};

use lofty::file::{AudioFile, TaggedFileExt};
use lofty::tag::{Accessor, ItemKey};
use sha2::{Digest, Sha256};
use url::Url;

use crate::catalogue::CatalogueRow;
use crate::crawl::CrawlFailure;

pub const AUDIO_EXTENSIONS: &[&str] = &[
    "mp3", "flac", "ogg", "oga", "opus", "wav", "m4a", "aac", "aif", "aiff",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenreSource {
    /// The first subfolder's name, else the genre tag.
    #[default]
    FolderThenTags,
    /// The genre tag, else the first subfolder's name.
    TagsThenFolder,
}

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("cannot read folder {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is not a folder")]
    NotAFolder { path: String },
}

#[derive(Debug, Clone, Default)]
pub struct FolderCatalogue {
    pub rows: Vec<CatalogueRow>,
    pub failures: Vec<CrawlFailure>,
}

impl FolderCatalogue {
    /// The rows in pages of `page_size`, numbered from 1 as the crawl does.
    pub fn pages(&self, page_size: usize) -> Vec<(u32, &[CatalogueRow])> {
        self.rows
            .chunks(page_size.max(1))
            .enumerate()
            .map(|(i, rows)| (i as u32 + 1, rows))
            .collect()
    }
}

fn audio_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), FolderError> {
    let entries = std::fs::read_dir(dir).map_err(|e| FolderError::Read {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        // Symlinked folders are skipped so a link cycle cannot recurse forever.
        if kind.is_dir() {
            audio_files(&path, out)?;
        } else if kind.is_file()
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// A track id from the path relative to the root, so moving the library elsewhere
/// keeps the ids.
pub fn folder_track_id(relative: &Path) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"folder:");
    hasher.update(relative.to_string_lossy().replace('\\', "/").as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// Lists `root` into catalogue rows, sorted by relative path. A file whose tags cannot
/// be read still becomes a row (named after the file); one that cannot be opened as
/// audio at all becomes a failure.
pub fn scan_folder(root: &Path, genre_source: GenreSource) -> Result<FolderCatalogue, FolderError> {
    if !root.is_dir() {
        return Err(FolderError::NotAFolder {
            path: root.display().to_string(),
        });
    }
    let root = root.canonicalize().map_err(|e| FolderError::Read {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut files = Vec::new();
    audio_files(&root, &mut files)?;
    files.sort();
    let page_url = Url::from_directory_path(&root)
        .map(|u| u.to_string())
        .unwrap_or_default();
    let mut catalogue = FolderCatalogue::default();
    for path in files {
        let relative = path.strip_prefix(&root).unwrap_or(&path).to_path_buf();
        let preview_url = match Url::from_file_path(&path) {
            Ok(url) => url.to_string(),
            Err(()) => continue,
        };
        let folder_genre = relative
            .parent()
            .and_then(|p| p.components().next())
            .map(|c| c.as_os_str().to_string_lossy().to_string());
        let tagged = match lofty::read_from_path(&path) {
            Ok(tagged) => tagged,
            Err(error) => {
                catalogue.failures.push(CrawlFailure {
                    unit_id: format!("file={}", relative.display()),
                    url: preview_url,
                    kind: "unreadable_audio".into(),
                    reason: error.to_string(),
                });
                continue;
            }
        };
        let tag = tagged.primary_tag().or_else(|| tagged.first_tag());
        let text = |key: ItemKey| {
            tag.and_then(|t| t.get_string(&key))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let tag_genre = tag
            .and_then(|t| t.genre())
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty());
        let genre = match genre_source {
            GenreSource::FolderThenTags => folder_genre.or(tag_genre),
            GenreSource::TagsThenFolder => tag_genre.or(folder_genre),
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let date = text(ItemKey::RecordingDate).or_else(|| text(ItemKey::Year));
        let release_date = date.as_deref().and_then(|d| {
            chrono::NaiveDate::parse_from_str(d.get(..10).unwrap_or(d), "%Y-%m-%d")
                .ok()
                .or_else(|| {
                    d.get(..4)?
                        .parse::<i32>()
                        .ok()
                        .and_then(|y| chrono::NaiveDate::from_ymd_opt(y, 1, 1))
                })
        });
        let duration = tagged.properties().duration().as_secs_f64().round() as u32;
        catalogue.rows.push(CatalogueRow {
            track_id: folder_track_id(&relative),
            artist: text(ItemKey::TrackArtist).unwrap_or_else(|| "Unknown artist".into()),
            release_title: text(ItemKey::AlbumTitle).unwrap_or_default(),
            track_name: text(ItemKey::TrackTitle).unwrap_or(stem),
            duration_s: (duration > 0).then_some(duration),
            label: text(ItemKey::Label).or_else(|| text(ItemKey::Publisher)),
            catalogue_number: text(ItemKey::CatalogNumber),
            release_date,
            genre,
            preview_url,
            page_url: page_url.clone(),
        });
    }
    Ok(catalogue)
}
