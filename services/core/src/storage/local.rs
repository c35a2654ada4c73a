//! The local-file backend: the embedded default.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{clamp_range, validate_key, ObjectStore, StoreError};

/// Temp files share the directory of their target (so the rename is atomic)
/// and carry this marker so listings never show them.
const TEMP_MARKER: &str = ".deepcuts-tmp-";

/// Objects as files under a root directory; keys are relative paths.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (and creates) the directory. A relative path is made absolute so
    /// the store's URL stays valid for other processes.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            key: root.display().to_string(),
            source,
        })?;
        let root = std::fs::canonicalize(root).map_err(|source| StoreError::Io {
            key: root.display().to_string(),
            source,
        })?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    async fn blocking<T, F>(key: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|err| StoreError::Backend {
                op: "run",
                key: key.to_owned(),
                message: err.to_string(),
            })?
    }
}

fn io_error(key: &str, source: std::io::Error) -> StoreError {
    if source.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound {
            key: key.to_owned(),
        }
    } else {
        StoreError::Io {
            key: key.to_owned(),
            source,
        }
    }
}

fn write_atomically(path: &Path, key: &str, data: &[u8]) -> Result<(), StoreError> {
    let parent = path.parent().expect("validated keys have a parent");
    std::fs::create_dir_all(parent).map_err(|e| io_error(key, e))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    let temp = parent.join(format!(
        ".{file_name}{TEMP_MARKER}{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(io_error(key, err));
    }
    Ok(())
}

fn collect_keys(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<String>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.contains(TEMP_MARKER) {
            continue;
        }
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let key = relative
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        if entry.file_type()?.is_dir() {
            // Only descend where keys under this directory can still match.
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                collect_keys(root, &path, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            out.push(key);
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let key_owned = key.to_owned();
        Self::blocking(key, move || write_atomically(&path, &key_owned, &data)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path_of(key)?;
        let key_owned = key.to_owned();
        Self::blocking(key, move || {
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| io_error(&key_owned, e))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let path = self.path_of(key)?;
        let key_owned = key.to_owned();
        Self::blocking(key, move || {
            let mut file = std::fs::File::open(&path).map_err(|e| io_error(&key_owned, e))?;
            let len = file.metadata().map_err(|e| io_error(&key_owned, e))?.len();
            let range = clamp_range(&key_owned, &range, len)?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| io_error(&key_owned, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        Self::blocking(prefix, move || {
            // Start the walk at the deepest directory the prefix names.
            let start_dir = match prefix_owned.rfind('/') {
                Some(i) => root.join(&prefix_owned[..i]),
                None => root.clone(),
            };
            let mut keys = Vec::new();
            collect_keys(&root, &start_dir, &prefix_owned, &mut keys)
                .map_err(|e| io_error(&prefix_owned, e))?;
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error(key, err)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(io_error(key, err)),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        let probe = format!(".health/{}", uuid::Uuid::new_v4().simple());
        self.put(&probe, Bytes::from_static(b"ok")).await?;
        self.delete(&probe).await
    }

    fn url(&self) -> String {
        url::Url::from_directory_path(&self.root)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| self.root.display().to_string())
    }
}
