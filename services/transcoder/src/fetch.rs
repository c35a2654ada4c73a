//! Fetching previews: HTTP(S) with timeouts, retries with backoff, a size cap
//! and a content-type check; `file://` for the folder source.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::TranscodeError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    pub connect_timeout_ms: u64,
    /// Whole request, body included.
    pub request_timeout_ms: u64,
    /// A body larger than this is refused (checked against Content-Length
    /// first, then while streaming).
    pub max_bytes: u64,
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            max_bytes: 10 * 1024 * 1024,
            attempts: 3,
            backoff_initial_ms: 250,
            backoff_max_ms: 5_000,
            user_agent: concat!("deepcuts-transcoder/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// A fetched preview.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub data: Bytes,
    pub content_type: Option<String>,
    /// HTTP attempts used (1 for `file://`).
    pub attempts: u32,
}

/// Content types a preview may be served as. Servers label audio loosely, so
/// generic binary types pass too; the decoder's probe has the last word.
fn content_type_allowed(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("audio/")
        || matches!(
            essence.as_str(),
            "application/octet-stream"
                | "binary/octet-stream"
                | "application/ogg"
                | "application/mp4"
                | "video/mp4"
                | "video/ogg"
                | "application/x-flac"
        )
}

/// An error page mislabelled as audio (a common CDN failure) is told apart
/// from audio by its first bytes.
fn looks_like_markup(data: &[u8]) -> bool {
    let head = &data[..data.len().min(512)];
    let text = String::from_utf8_lossy(head)
        .trim_start()
        .to_ascii_lowercase();
    [
        "<!doctype",
        "<html",
        "<?xml",
        "<head",
        "<body",
        "{\"error",
        "<error",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: FetchConfig,
}

enum Attempt {
    Done(Fetched),
    Retry(TranscodeError, Option<Duration>),
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Result<Self, TranscodeError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| TranscodeError::Config(format!("http client: {e}")))?;
        Ok(Fetcher { client, config })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Fetches `source`: an `http(s)://` or `file://` URL.
    pub async fn fetch(&self, source: &str) -> Result<Fetched, TranscodeError> {
        let url = Url::parse(source).map_err(|e| TranscodeError::InvalidSource {
            url: source.to_string(),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "http" | "https" => self.fetch_http(url).await,
            "file" => self.fetch_file(&url).await,
            other => Err(TranscodeError::InvalidSource {
                url: source.to_string(),
                reason: format!("scheme {other:?} is not supported"),
            }),
        }
    }

    async fn fetch_file(&self, url: &Url) -> Result<Fetched, TranscodeError> {
        let path = url
            .to_file_path()
            .map_err(|_| TranscodeError::InvalidSource {
                url: url.to_string(),
                reason: "not a local file path".to_string(),
            })?;
        let io_err = |source| TranscodeError::Io {
            path: path.display().to_string(),
            source,
        };
        let meta = tokio::fs::metadata(&path).await.map_err(io_err)?;
        if meta.len() > self.config.max_bytes {
            return Err(TranscodeError::TooLarge {
                url: url.to_string(),
                cap_bytes: self.config.max_bytes,
            });
        }
        let data = tokio::fs::read(&path).await.map_err(io_err)?;
        Ok(Fetched {
            data: Bytes::from(data),
            content_type: None,
            attempts: 1,
        })
    }

    async fn fetch_http(&self, url: Url) -> Result<Fetched, TranscodeError> {
        let attempts = self.config.attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.try_http(&url, attempt).await? {
                Attempt::Done(fetched) => return Ok(fetched),
                Attempt::Retry(err, _) if attempt >= attempts => {
                    return Err(match err {
                        TranscodeError::Network { url, reason, .. } => TranscodeError::Network {
                            url,
                            attempts,
                            reason,
                        },
                        other => other,
                    })
                }
                Attempt::Retry(err, retry_after) => {
                    let backoff = self.backoff(attempt, retry_after);
                    tracing::debug!(url = %url, attempt, error = %err, backoff_ms = backoff.as_millis() as u64, "fetch failed, retrying");
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Exponential backoff with jitter, or the server's Retry-After when it
    /// asks for no more than the cap.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let cap = Duration::from_millis(self.config.backoff_max_ms);
        if let Some(wait) = retry_after.filter(|w| *w <= cap) {
            return wait;
        }
        let base = self
            .config
            .backoff_initial_ms
            .saturating_mul(1u64 << (attempt - 1).min(16));
        let jitter = rand::random_range(0..=base / 2 + 1);
        Duration::from_millis((base + jitter).min(self.config.backoff_max_ms))
    }

    /// One request. Permanent failures are `Err`; transient ones `Retry`.
    async fn try_http(&self, url: &Url, attempt: u32) -> Result<Attempt, TranscodeError> {
        let url_s = url.to_string();
        let network = |e: reqwest::Error| {
            let err = if e.is_timeout() {
                TranscodeError::Timeout {
                    url: url_s.clone(),
                    after: Duration::from_millis(self.config.request_timeout_ms),
                }
            } else {
                TranscodeError::Network {
                    url: url_s.clone(),
                    attempts: attempt,
                    reason: error_chain(&e),
                }
            };
            Attempt::Retry(err, None)
        };
        let response = match self.client.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => return Ok(network(e)),
        };
        let status = response.status();
        if !status.is_success() {
            let err = TranscodeError::HttpStatus {
                url: url_s.clone(),
                status: status.as_u16(),
            };
            if err.is_transient() {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                return Ok(Attempt::Retry(err, retry_after));
            }
            return Err(err);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(ct) = &content_type {
            if !content_type_allowed(ct) {
                return Err(TranscodeError::ContentType {
                    url: url_s,
                    content_type: ct.clone(),
                });
            }
        }
        let cap = self.config.max_bytes;
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(TranscodeError::TooLarge {
                url: url_s,
                cap_bytes: cap,
            });
        }
        let mut body = BytesMut::with_capacity(response.content_length().unwrap_or(0) as usize);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok(network(e)),
            };
            if body.len() as u64 + chunk.len() as u64 > cap {
                return Err(TranscodeError::TooLarge {
                    url: url_s,
                    cap_bytes: cap,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if looks_like_markup(&body) {
            return Err(TranscodeError::ContentType {
                url: url_s,
                content_type: format!(
                    "{} (body is a text/markup page)",
                    content_type.as_deref().unwrap_or("none")
                ),
            });
        }
        Ok(Attempt::Done(Fetched {
            data: body.freeze(),
            content_type,
            attempts: attempt,
        }))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(content_type_allowed("audio/mpeg"));
        assert!(content_type_allowed("Audio/MPEG; charset=binary"));
        assert!(content_type_allowed("application/octet-stream"));
        assert!(!content_type_allowed("text/html; charset=utf-8"));
        assert!(!content_type_allowed("application/json"));
    }

    #[test]
    fn markup_sniffing() {
        assert!(looks_like_markup(b"  <!DOCTYPE html><html>"));
        assert!(looks_like_markup(b"<html><body>404</body></html>"));
        assert!(!looks_like_markup(b"ID3\x03\x00\x00\x00"));
        assert!(!looks_like_markup(&[0xff, 0xfb, 0x90, 0x64]));
    }

    #[tokio::test]
    async fn rejects_unknown_schemes_and_garbage() {
        let fetcher = Fetcher::new(FetchConfig::default()).unwrap();
        let err = fetcher
            .fetch("ftp://example.invalid/a.mp3")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_source");
        let err = fetcher.fetch("not a url").await.unwrap_err();
        assert_eq!(err.kind(), "invalid_source");
    }
}
