//! Object storage: one small trait with two backends.
//!
//! - `file:///dir` ([`LocalStore`]): the embedded default; writes are atomic
//!   (temp file, then rename).
//! - `s3://bucket/prefix` ([`S3Store`]): any S3-compatible server; large objects
//!   go up in multipart uploads, which S3 publishes only when complete.
//!
//! On both, a reader sees either the whole previous object or the whole new
//! one, never half of one. Keys are `/`-separated relative paths; artefact
//! keys come from [`crate::keys`].

mod local;
mod s3;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

/// Shared handle to a store, as services pass it around.
pub type Store = Arc<dyn ObjectStore>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found: {key}")]
    NotFound { key: String },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("invalid store url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("byte range {start}..{end} is outside {key} ({len} bytes)")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("access denied to {key}: {message}")]
    Unauthorized { key: String, message: String },
    #[error("{op} {key} timed out")]
    Timeout { op: &'static str, key: String },
    #[error("i/o error on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage backend failed to {op} {key}: {message}")]
    Backend {
        op: &'static str,
        key: String,
        message: String,
    },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// The verbs every backend offers. Implementations must be safe to share
/// between tasks and must never expose a partly written object.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Writes the whole object, replacing any previous one.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// Reads the whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Reads `range` of the object; an end past the object's length is cut to it.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;
    /// Every key that starts with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Readiness: the backend can be reached and written.
    async fn check(&self) -> Result<(), StoreError>;
    /// The URL this store was opened from, for logs and job records.
    fn url(&self) -> String;
}

/// Which store to open, and how to reach S3 when it is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `file:///absolute/dir`, a plain directory path, or `s3://bucket/prefix`.
    pub url: String,
    pub s3: S3Config,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "./deepcuts-data".to_owned(),
            s3: S3Config::default(),
        }
    }
}

/// Opens the store a URL names, with default S3 settings (endpoint and
/// credentials from the standard `AWS_*` environment variables).
pub async fn open_store(url: &str) -> Result<Store, StoreError> {
    open_store_with(&StoreConfig {
        url: url.to_owned(),
        ..StoreConfig::default()
    })
    .await
}

/// Opens the store `config.url` names.
pub async fn open_store_with(config: &StoreConfig) -> Result<Store, StoreError> {
    let url = config.url.trim();
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: "no bucket name".to_owned(),
            });
        }
        let store = S3Store::connect(bucket, prefix, &config.s3).await?;
        return Ok(Arc::new(store));
    }
    let path = if url.starts_with("file://") {
        url::Url::parse(url)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: "a file URL needs an absolute path, e.g. file:///var/lib/deepcuts"
                    .to_owned(),
            })?
    } else if url.contains("://") {
        return Err(StoreError::InvalidUrl {
            url: url.to_owned(),
            reason: "supported schemes are file:// and s3://".to_owned(),
        });
    } else {
        std::path::PathBuf::from(url)
    };
    Ok(Arc::new(LocalStore::new(path)?))
}

/// Rejects keys that could escape the store's root or alias another key.
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    let invalid = |reason| {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return invalid("must not start or end with '/'");
    }
    if key.contains('\0') || key.contains('\\') {
        return invalid("contains NUL or backslash");
    }
    if key
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return invalid("empty, '.' or '..' path segment");
    }
    Ok(())
}

/// Clamps a requested byte range to an object of `len` bytes.
pub(crate) fn clamp_range(
    key: &str,
    range: &Range<u64>,
    len: u64,
) -> Result<Range<u64>, StoreError> {
    if range.start > range.end
        || range.start > len
        || (range.start == len && len > 0 && range.end > range.start)
    {
        return Err(StoreError::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            len,
        });
    }
    Ok(range.start..range.end.min(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_escape_the_root_are_rejected() {
        for bad in ["", "/abs", "a/../b", "a//b", "a/./b", "dir/", "a\\b"] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be rejected");
        }
        validate_key("jobs/j1/catalogue/page=00001.parquet").unwrap();
    }

    #[test]
    fn ranges_are_clamped_to_the_object() {
        assert_eq!(clamp_range("k", &(2..100), 10).unwrap(), 2..10);
        assert_eq!(clamp_range("k", &(0..0), 0).unwrap(), 0..0);
        assert!(clamp_range("k", &(11..12), 10).is_err());
        assert!(clamp_range("k", &(10..12), 10).is_err());
        let (start, end) = (5, 3);
        assert!(clamp_range("k", &(start..end), 10).is_err());
    }

    #[tokio::test]
    async fn urls_pick_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let file_url = url::Url::from_directory_path(dir.path())
            .unwrap()
            .to_string();
        let store = open_store(&file_url).await.unwrap();
        assert!(store.url().starts_with("file://"));
        assert!(matches!(
            open_store("ftp://x/y").await,
            Err(StoreError::InvalidUrl { .. })
        ));
        assert!(matches!(
            open_store("s3:///prefix").await,
            Err(StoreError::InvalidUrl { .. })
        ));
    }
}
