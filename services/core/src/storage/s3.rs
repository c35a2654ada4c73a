//! The S3 backend, for any S3-compatible server (AWS, SeaweedFS, MinIO, ...).

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{clamp_range, validate_key, ObjectStore, StoreError};

/// How to reach the S3 server. Unset fields fall back to the standard AWS
/// environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:8333` for a local SeaweedFS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which self-hosted servers need.
    pub path_style: bool,
    /// Create the bucket on start when it does not exist.
    pub create_bucket: bool,
    /// Objects larger than this go up as multipart uploads.
    pub multipart_threshold_bytes: u64,
    pub multipart_part_bytes: u64,
    /// Parts uploaded at once in a multipart upload.
    pub multipart_concurrency: usize,
    pub connect_timeout_ms: u64,
    /// Limit on one HTTP attempt.
    pub attempt_timeout_ms: u64,
    /// Limit on a whole operation, retries included.
    pub operation_timeout_ms: u64,
    pub max_attempts: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
            create_bucket: true,
            multipart_threshold_bytes: 16 * 1024 * 1024,
            multipart_part_bytes: 8 * 1024 * 1024,
            multipart_concurrency: 4,
            connect_timeout_ms: 5_000,
            attempt_timeout_ms: 60_000,
            operation_timeout_ms: 300_000,
            max_attempts: 5,
        }
    }
}

/// Objects in one bucket, under an optional key prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or ends with '/'.
    prefix: String,
    config: S3Config,
}

impl S3Store {
    pub async fn connect(
        bucket: &str,
        prefix: &str,
        config: &S3Config,
    ) -> Result<Self, StoreError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                    .operation_attempt_timeout(Duration::from_millis(config.attempt_timeout_ms))
                    .operation_timeout(Duration::from_millis(config.operation_timeout_ms))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts.max(1)));
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "deepcuts-config",
            ));
        }
        let region = config
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        loader = loader.region(Region::new(region));
        let sdk_config = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(config.path_style)
            // Self-hosted servers do not all speak the newer default checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let prefix = prefix.trim_matches('/');
        let store = Self {
            client: Client::from_conf(s3_config),
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            config: config.clone(),
        };
        if config.create_bucket {
            store.ensure_bucket().await?;
        }
        Ok(store)
    }

    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => {
                match self
                    .client
                    .create_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    // Another worker created it first.
                    Err(err) if status_of(&err) == Some(409) => Ok(()),
                    Err(err) => Err(map_err("create bucket", &self.bucket, err)),
                }
            }
            Err(err) => Err(map_err("head bucket", &self.bucket, err)),
        }
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    async fn put_multipart(
        &self,
        key: &str,
        full_key: &str,
        data: Bytes,
    ) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(|e| map_err("start multipart upload of", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let part_size = self.config.multipart_part_bytes.max(5 * 1024 * 1024) as usize;
        let uploads = (0..data.len().div_ceil(part_size)).map(|i| {
            let body = data.slice(i * part_size..((i + 1) * part_size).min(data.len()));
            let part_number = i as i32 + 1;
            let request = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full_key)
                .upload_id(&upload_id)
                .part_number(part_number)
                .body(ByteStream::from(body));
            async move {
                let uploaded = request
                    .send()
                    .await
                    .map_err(|e| map_err("upload part of", key, e))?;
                Ok::<_, StoreError>(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(uploaded.e_tag().map(str::to_owned))
                        .build(),
                )
            }
        });
        let parts: Result<Vec<CompletedPart>, StoreError> = futures::stream::iter(uploads)
            .buffered(self.config.multipart_concurrency.max(1))
            .try_collect()
            .await;
        let completed = match parts {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full_key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| map_err("complete multipart upload of", key, e)),
            Err(err) => Err(err),
        };
        if let Err(err) = completed {
            // Nothing was published; free the parts the server holds.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full_key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(err);
        }
        Ok(())
    }
}

fn status_of<E, R: HttpStatus>(err: &SdkError<E, R>) -> Option<u16> {
    err.raw_response().map(HttpStatus::status_code)
}

/// The one thing we need from the SDK's raw response type.
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The error's chain of causes in one line, without the SDK's debug dumps.
fn compact_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        // Some SDK layers append a Debug dump in parentheses; keep the prose.
        let text = text.split(" (").next().unwrap_or(&text).trim().to_owned();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    let mut message = parts.join(": ");
    if message.len() > 400 {
        message.truncate(message.floor_char_boundary(400));
        message.push('…');
    }
    message
}

fn map_err<E>(
    op: &'static str,
    key: &str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let key = key.to_owned();
    if matches!(err, SdkError::TimeoutError(_)) {
        return StoreError::Timeout { op, key };
    }
    let message = compact_error(&err);
    match status_of(&err) {
        Some(404) => StoreError::NotFound { key },
        Some(401 | 403) => StoreError::Unauthorized { key, message },
        _ => StoreError::Backend { op, key, message },
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let full_key = self.full_key(key)?;
        if data.len() as u64 > self.config.multipart_threshold_bytes {
            return self.put_multipart(key, &full_key, data).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| map_err("put", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let full_key = self.full_key(key)?;
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| map_err("get", key, e))?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Backend {
                op: "read body of",
                key: key.to_owned(),
                message: e.to_string(),
            })?;
        Ok(body.into_bytes())
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let full_key = self.full_key(key)?;
        // The object's length decides how the range is cut, as on local files.
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| map_err("head", key, e))?;
        let len = head.content_length().unwrap_or(0).max(0) as u64;
        let range = clamp_range(key, &range, len)?;
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| map_err("get range of", key, e))?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Backend {
                op: "read body of",
                key: key.to_owned(),
                message: e.to_string(),
            })?;
        Ok(body.into_bytes())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err("list", prefix, e))?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    keys.push(key.to_owned());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full_key = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(map_err("delete", key, err)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let full_key = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if status_of(&err) == Some(404) => Ok(false),
            Err(err) => Err(map_err("head", key, err)),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| map_err("head bucket", &self.bucket, e))?;
        Ok(())
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}
