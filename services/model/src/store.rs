//! Blocking access to the object store for the training thread.
//!
//! Training is synchronous libtorch work that runs on its own thread; it reaches
//! the async store through a runtime handle. Never call these from inside an
//! async task: run training under `spawn_blocking` (or a plain thread).

use arrow_array::RecordBatch;
use bytes::Bytes;
use deepcuts_core::parquet_io::{self, ParquetFile, ParquetOptions};
use deepcuts_core::storage::{Store, StoreError};
use tokio::runtime::Handle;

use crate::error::ModelError;

#[derive(Debug, Clone)]
pub struct BlockingStore {
    store: Store,
    handle: Handle,
}

impl BlockingStore {
    pub fn new(store: Store, handle: Handle) -> Self {
        Self { store, handle }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.handle.block_on(self.store.get(key))
    }

    pub fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.handle.block_on(self.store.put(key, data))
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.handle.block_on(self.store.list(prefix))
    }

    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.handle.block_on(self.store.delete(key))
    }

    pub fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.handle.block_on(self.store.exists(key))
    }

    /// Reads and decodes a whole Parquet object on the calling thread.
    pub fn read_parquet(&self, key: &str) -> Result<ParquetFile, ModelError> {
        let data = self.get(key)?;
        Ok(parquet_io::decode_batches(key, data)?)
    }

    pub fn write_parquet(
        &self,
        key: &str,
        batches: &[RecordBatch],
        options: &ParquetOptions,
    ) -> Result<(), ModelError> {
        let schema =
            batches
                .first()
                .map(RecordBatch::schema)
                .ok_or_else(|| ModelError::BadInput {
                    key: key.to_owned(),
                    reason: "nothing to write".into(),
                })?;
        let data = parquet_io::encode_batches(key, schema, batches, options)?;
        Ok(self.put(key, data)?)
    }

    pub fn put_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), ModelError> {
        let data = serde_json::to_vec_pretty(value)?;
        Ok(self.put(key, Bytes::from(data))?)
    }

    /// `Ok(None)` when the object does not exist.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ModelError> {
        match self.get(key) {
            Ok(data) => Ok(Some(serde_json::from_slice(&data)?)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}
