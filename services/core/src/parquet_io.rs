//! Parquet artefacts in storage: encode Arrow record batches with zstd and
//! sensible row groups, write them with one `put`, and read them back.
//!
//! The schema of each artefact is documented once, beside the code that owns
//! it (see `docs/architecture.md` for the index). Front-end settings and other
//! provenance travel as Parquet key-value metadata.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::storage::{ObjectStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ParquetIoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("parquet error in {key}: {source}")]
    Parquet {
        key: String,
        #[source]
        source: ParquetError,
    },
    #[error("arrow error in {key}: {source}")]
    Arrow {
        key: String,
        #[source]
        source: ArrowError,
    },
    #[error("{key}: nothing to write and no schema given")]
    NoBatches { key: String },
    #[error("{key}: {message}")]
    Schema { key: String, message: String },
}

/// How an artefact is written.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    /// Rows per row group at most.
    pub rows_per_group: usize,
    /// Bytes per row group at most (before compression), so wide rows such
    /// as spectrogram windows still give groups that stream well.
    pub max_group_bytes: usize,
    pub zstd_level: i32,
    /// Provenance stored in the file footer (front-end config, model id, ...).
    pub metadata: Vec<(String, String)>,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        Self {
            rows_per_group: 64 * 1024,
            max_group_bytes: 32 * 1024 * 1024,
            zstd_level: 3,
            metadata: Vec::new(),
        }
    }
}

/// A decoded Parquet artefact.
#[derive(Debug, Clone)]
pub struct ParquetFile {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub metadata: HashMap<String, String>,
}

impl ParquetFile {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Encodes batches (all of one schema) into a Parquet file in memory.
pub fn encode_batches(
    key: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
    options: &ParquetOptions,
) -> Result<Bytes, ParquetIoError> {
    let parquet_err = |source| ParquetIoError::Parquet {
        key: key.to_owned(),
        source,
    };
    let zstd = ZstdLevel::try_new(options.zstd_level).map_err(parquet_err)?;
    let metadata = (!options.metadata.is_empty()).then(|| {
        options
            .metadata
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect()
    });
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(options.rows_per_group.max(1)))
        .set_max_row_group_bytes(Some(options.max_group_bytes.max(1)))
        .set_key_value_metadata(metadata)
        .build();
    let mut buffer = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut buffer, schema.clone(), Some(properties)).map_err(parquet_err)?;
    for batch in batches {
        if batch.schema() != schema {
            return Err(ParquetIoError::Schema {
                key: key.to_owned(),
                message: "batches differ in schema".to_owned(),
            });
        }
        writer.write(batch).map_err(parquet_err)?;
    }
    writer.close().map_err(parquet_err)?;
    Ok(Bytes::from(buffer))
}

/// Decodes a whole Parquet file held in memory.
pub fn decode_batches(key: &str, data: Bytes) -> Result<ParquetFile, ParquetIoError> {
    let parquet_err = |source| ParquetIoError::Parquet {
        key: key.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(parquet_err)?;
    let schema = builder.schema().clone();
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    let reader = builder.build().map_err(parquet_err)?;
    let batches =
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ParquetIoError::Arrow {
                key: key.to_owned(),
                source,
            })?;
    Ok(ParquetFile {
        schema,
        batches,
        metadata,
    })
}

/// Writes batches as one Parquet object with default options.
pub async fn write_batches(
    store: &dyn ObjectStore,
    key: &str,
    batches: &[RecordBatch],
) -> Result<(), ParquetIoError> {
    let schema =
        batches
            .first()
            .map(RecordBatch::schema)
            .ok_or_else(|| ParquetIoError::NoBatches {
                key: key.to_owned(),
            })?;
    write_batches_with(store, key, schema, batches, &ParquetOptions::default()).await
}

/// Writes batches as one Parquet object. With no batches, writes an empty
/// file of `schema`, so "this unit produced nothing" is itself recorded.
pub async fn write_batches_with(
    store: &dyn ObjectStore,
    key: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
    options: &ParquetOptions,
) -> Result<(), ParquetIoError> {
    let owned_key = key.to_owned();
    let batches = batches.to_vec();
    let options = options.clone();
    // Compression is CPU work; keep it off the async threads.
    let data =
        tokio::task::spawn_blocking(move || encode_batches(&owned_key, schema, &batches, &options))
            .await
            .map_err(|err| ParquetIoError::Schema {
                key: key.to_owned(),
                message: format!("encoder task failed: {err}"),
            })??;
    store.put(key, data).await?;
    Ok(())
}

/// Reads a whole Parquet object.
pub async fn read_parquet(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<ParquetFile, ParquetIoError> {
    let data = store.get(key).await?;
    let owned_key = key.to_owned();
    tokio::task::spawn_blocking(move || decode_batches(&owned_key, data))
        .await
        .map_err(|err| ParquetIoError::Schema {
            key: key.to_owned(),
            message: format!("decoder task failed: {err}"),
        })?
}

/// Reads a whole Parquet object's batches.
pub async fn read_batches(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Vec<RecordBatch>, ParquetIoError> {
    Ok(read_parquet(store, key).await?.batches)
}

/// Shorthand for building schemas in services.
pub fn schema(fields: Vec<arrow_schema::Field>) -> SchemaRef {
    Arc::new(arrow_schema::Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;
    use arrow_array::{Float32Array, StringArray};
    use arrow_schema::{DataType, Field};

    fn sample(rows: usize) -> RecordBatch {
        let schema = schema(vec![
            Field::new("track_id", DataType::Utf8, false),
            Field::new("score", DataType::Float32, false),
        ]);
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("t{i}")),
                )),
                Arc::new(Float32Array::from_iter_values(
                    (0..rows).map(|i| i as f32 * 0.5),
                )),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn batches_and_metadata_round_trip_through_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let batch = sample(1000);
        let options = ParquetOptions {
            rows_per_group: 100,
            metadata: vec![("frontend".into(), "{\"n_mels\":128}".into())],
            ..ParquetOptions::default()
        };
        write_batches_with(
            &store,
            "a/b.parquet",
            batch.schema(),
            std::slice::from_ref(&batch),
            &options,
        )
        .await
        .unwrap();
        let file = read_parquet(&store, "a/b.parquet").await.unwrap();
        assert_eq!(file.num_rows(), 1000);
        assert_eq!(file.metadata.get("frontend").unwrap(), "{\"n_mels\":128}");
        let joined = arrow_select_concat(&file.batches);
        assert_eq!(joined, batch);
        let data = store.get("a/b.parquet").await.unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(data).unwrap();
        assert_eq!(
            reader.metadata().num_row_groups(),
            10,
            "row groups follow rows_per_group"
        );
    }

    #[tokio::test]
    async fn an_empty_unit_still_writes_a_file_with_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let schema = sample(1).schema();
        write_batches_with(
            &store,
            "empty.parquet",
            schema.clone(),
            &[],
            &ParquetOptions::default(),
        )
        .await
        .unwrap();
        let file = read_parquet(&store, "empty.parquet").await.unwrap();
        assert_eq!(file.num_rows(), 0);
        assert_eq!(file.schema.fields().len(), schema.fields().len());
        assert!(matches!(
            write_batches(&store, "x.parquet", &[]).await,
            Err(ParquetIoError::NoBatches { .. })
        ));
    }

    #[tokio::test]
    async fn garbage_is_a_parquet_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        store
            .put("bad.parquet", Bytes::from_static(b"not parquet at all"))
            .await
            .unwrap();
        assert!(matches!(
            read_parquet(&store, "bad.parquet").await,
            Err(ParquetIoError::Parquet { .. })
        ));
        assert!(matches!(
            read_parquet(&store, "missing.parquet").await,
            Err(ParquetIoError::Store(StoreError::NotFound { .. }))
        ));
    }

    fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
        let schema = batches[0].schema();
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn arrow_array::Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                arrow_select::concat::concat(&arrays).unwrap()
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }
}
