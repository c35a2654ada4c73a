//! The HTTP API and the listening page.
//!
//! - `GET /` the page (HTML, JS and CSS compiled into the binary);
//! - `GET /api/tracks?q=&limit=` search;
//! - `GET /api/tracks/{id}` one track;
//! - `GET /api/tracks/{id}/similar?k=&diverse=` its neighbours;
//! - `GET /api/tracks/{id}/spectrogram.png` its spectrogram, from a
//!   [`SpectrogramSource`];
//! - `GET /api/tracks/{id}/preview` its preview audio: a redirect for web
//!   URLs, the file itself (with byte ranges) for `file://` previews.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::library::{Library, Track};

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// Largest k a request may ask for.
pub const MAX_K: usize = 100;

/// Renders a track's spectrogram as PNG. `Ok(None)` means "not available".
#[async_trait]
pub trait SpectrogramSource: Send + Sync {
    async fn spectrogram_png(&self, track: &Track) -> Result<Option<Bytes>, String>;
}

/// The source used until a renderer is wired in: never has an image.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSpectrograms;

#[async_trait]
impl SpectrogramSource for NoSpectrograms {
    async fn spectrogram_png(&self, _track: &Track) -> Result<Option<Bytes>, String> {
        Ok(None)
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub library: Arc<Library>,
    pub spectrograms: Arc<dyn SpectrogramSource>,
}

/// A track with the API links a client needs.
#[derive(Debug, Serialize)]
pub struct ApiTrack<'a> {
    #[serde(flatten)]
    pub track: &'a Track,
    pub preview: String,
    pub spectrogram: String,
    pub similar: String,
}

impl<'a> ApiTrack<'a> {
    pub fn new(track: &'a Track) -> Self {
        let id = encode_segment(&track.track_id);
        Self {
            track,
            preview: format!("/api/tracks/{id}/preview"),
            spectrogram: format!("/api/tracks/{id}/spectrogram.png"),
            similar: format!("/api/tracks/{id}/similar"),
        }
    }
}

fn encode_segment(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[derive(Debug, Serialize)]
struct ApiNeighbour<'a> {
    rank: usize,
    score: f32,
    #[serde(flatten)]
    track: ApiTrack<'a>,
}

#[derive(Debug, Serialize)]
struct SimilarResponse<'a> {
    track: ApiTrack<'a>,
    k: usize,
    diverse: bool,
    /// Neighbours the table stores per track: the most any query can show.
    stored: usize,
    model_id: &'a str,
    neighbours: Vec<ApiNeighbour<'a>>,
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct SimilarParams {
    k: Option<usize>,
    diverse: Option<bool>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn unknown_track(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no track {id:?} in this catalogue"),
    )
}

/// The routes, with `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    INDEX_HTML,
                )
            }),
        )
        .route(
            "/assets/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/assets/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLE_CSS,
                )
            }),
        )
        .route("/api/tracks", get(search))
        .route("/api/tracks/{id}", get(track))
        .route("/api/tracks/{id}/similar", get(similar))
        .route("/api/tracks/{id}/spectrogram.png", get(spectrogram))
        .route("/api/tracks/{id}/preview", get(preview))
        .with_state(state)
}

async fn search(State(state): State<AppState>, Query(params): Query<SearchParams>) -> Response {
    let limit = params.limit.unwrap_or(20).clamp(1, 200);
    let query = params.q.unwrap_or_default();
    let hits: Vec<ApiTrack<'_>> = state
        .library
        .search(&query, limit)
        .into_iter()
        .map(ApiTrack::new)
        .collect();
    Json(serde_json::json!({ "query": query, "tracks": hits })).into_response()
}

async fn track(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.library.track(&id) {
        Some(track) => Json(ApiTrack::new(track)).into_response(),
        None => unknown_track(&id),
    }
}

async fn similar(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<SimilarParams>,
) -> Response {
    let k = params.k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return error(
            StatusCode::BAD_REQUEST,
            format!("k must be between 1 and {MAX_K}"),
        );
    }
    let diverse = params.diverse.unwrap_or(false);
    let library = &state.library;
    let (Some(track), Some(neighbours)) = (library.track(&id), library.similar(&id, k, diverse))
    else {
        return unknown_track(&id);
    };
    let body = SimilarResponse {
        track: ApiTrack::new(track),
        k,
        diverse,
        stored: library.k_max,
        model_id: &library.model_id,
        neighbours: neighbours
            .into_iter()
            .map(|n| ApiNeighbour {
                rank: n.rank,
                score: n.score,
                track: ApiTrack::new(n.track),
            })
            .collect(),
    };
    Json(body).into_response()
}

async fn spectrogram(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(track) = state.library.track(&id) else {
        return unknown_track(&id);
    };
    match state.spectrograms.spectrogram_png(track).await {
        Ok(Some(png)) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no spectrogram renderer is configured for this server",
        ),
        Err(reason) => {
            tracing::warn!(job_id = %state.library.job_id, track_id = %id, %reason, "spectrogram failed");
            error(StatusCode::BAD_GATEWAY, reason)
        }
    }
}

fn audio_type(path: &str) -> &'static str {
    let lower = path.to_ascii_lowercase();
    match lower.rsplit('.').next() {
        Some("mp3") => "audio/mpeg",
        Some("wav") => "audio/wav",
        Some("ogg") | Some("oga") => "audio/ogg",
        Some("flac") => "audio/flac",
        Some("m4a") | Some("mp4") => "audio/mp4",
        _ => "application/octet-stream",
    }
}

/// Parses a single `bytes=a-b` range against a body of `len` bytes.
fn byte_range(headers: &HeaderMap, len: u64) -> Option<std::ops::Range<u64>> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let range = if start.is_empty() {
        let suffix: u64 = end.parse().ok()?;
        len.saturating_sub(suffix)..len
    } else {
        let start: u64 = start.parse().ok()?;
        let end = if end.is_empty() {
            len - 1
        } else {
            end.parse::<u64>().ok()?.min(len - 1)
        };
        start..end + 1
    };
    (range.start < range.end && range.end <= len).then_some(range)
}

async fn preview(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(track) = state.library.track(&id) else {
        return unknown_track(&id);
    };
    let url = track.preview_url.trim();
    if url.is_empty() {
        return error(StatusCode::NOT_FOUND, "this track has no preview");
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Redirect::temporary(url).into_response();
    }
    // Only the catalogue's own file:// previews are served, never a path from the request.
    let Some(path) = url::Url::parse(url)
        .ok()
        .filter(|u| u.scheme() == "file")
        .and_then(|u| u.to_file_path().ok())
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("preview URL {url:?} is neither a web nor a file URL"),
        );
    };
    let body = match tokio::fs::read(&path).await {
        Ok(body) => Bytes::from(body),
        Err(err) => {
            tracing::warn!(job_id = %state.library.job_id, track_id = %id, error = %err, "preview file unreadable");
            return error(
                StatusCode::NOT_FOUND,
                format!("preview file unreadable: {err}"),
            );
        }
    };
    let content_type = HeaderValue::from_static(audio_type(url));
    let len = body.len() as u64;
    match byte_range(&headers, len) {
        Some(range) => {
            let content_range = format!("bytes {}-{}/{len}", range.start, range.end - 1);
            (
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
                    (
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&content_range)
                            .unwrap_or(HeaderValue::from_static("*")),
                    ),
                ],
                body.slice(range.start as usize..range.end as usize),
            )
                .into_response()
        }
        None => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
            ],
            body,
        )
            .into_response(),
    }
}

/// Binds `listen` and serves until `stop` is cancelled; returns the bound
/// address at once (port 0 picks a free one).
pub async fn serve(
    state: AppState,
    listen: &str,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(state);
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    Ok((addr, handle))
}
