//! The HTTP side of the shop: routing, fault injection, preview cache and request log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::catalogue::{Catalogue, CatalogueConfig, PreviewFault};
use crate::render::{render_page, robots_txt, PageContext, PageState, Template};
use crate::synth;

/// Errors a listing or preview request can meet on purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Fraction of listing and preview requests answered with one of `error_statuses`.
    pub error_rate: f64,
    pub error_statuses: Vec<u16>,
    /// Fraction of those 429/503 answers that carry `Retry-After`.
    pub retry_after_rate: f64,
    pub retry_after_s: u32,
    /// Fraction of listing and preview requests that never answer (until `hang`).
    pub hang_rate: f64,
    pub hang: Duration,
    /// Added to every listing and preview response.
    pub latency: Duration,
    /// Listing pages (1-based) served with mangled release blocks.
    pub malformed_pages: Vec<usize>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_statuses: vec![500, 503, 429],
            retry_after_rate: 0.5,
            retry_after_s: 1,
            hang_rate: 0.0,
            hang: Duration::from_secs(3600),
            latency: Duration::ZERO,
            malformed_pages: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShopConfig {
    pub catalogue: CatalogueConfig,
    pub template: Template,
    pub releases_per_page: usize,
    /// Length of every synthesised preview.
    pub preview_seconds: f32,
    /// Where encoded previews are kept between runs; memory only when `None`.
    pub preview_cache_dir: Option<PathBuf>,
    pub crawl_delay_s: Option<f64>,
    pub faults: Faults,
}

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            catalogue: CatalogueConfig::default(),
            template: Template::Juno,
            releases_per_page: 20,
            preview_seconds: 120.0,
            preview_cache_dir: None,
            crawl_delay_s: None,
            faults: Faults::default(),
        }
    }
}

/// One request as the shop saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub seq: u64,
    /// Arrival time since the shop started.
    pub at: Duration,
    pub unix_ms: u64,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub user_agent: Option<String>,
    pub status: u16,
    /// The fault that was injected, if any (`503`, `hang`, `malformed`, ...).
    pub fault: Option<String>,
}

/// One track of the ground truth, with every field the crawl should find.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthTrack {
    pub shop_id: String,
    pub artist: String,
    pub release_title: String,
    pub track_name: String,
    pub duration_s: u32,
    pub label: String,
    pub catalogue_number: String,
    /// ISO date.
    pub release_date: String,
    /// Genre as the shop prints it.
    pub genre: String,
    pub genre_slug: String,
    pub preview_path: String,
    pub page: usize,
    pub page_path: String,
    pub on_malformed_page: bool,
    pub preview_fault: Option<PreviewFault>,
    pub bitrate_kbps: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub seed: u64,
    pub template: Template,
    pub pages: usize,
    pub preview_seconds: f32,
    pub tracks: Vec<TruthTrack>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid shop config: {0}")]
    Config(String),
}

struct ShopState {
    config: ShopConfig,
    catalogue: Catalogue,
    /// Release indices on each page.
    pages: Vec<Vec<usize>>,
    started: Instant,
    log: Mutex<Vec<RequestRecord>>,
    attempts: Mutex<HashMap<String, u64>>,
    previews: Mutex<HashMap<String, Bytes>>,
    cancel: CancellationToken,
}

impl ShopState {
    fn new(config: ShopConfig) -> Result<ShopState, ShopError> {
        if config.releases_per_page == 0 {
            return Err(ShopError::Config(
                "releases_per_page must be at least 1".into(),
            ));
        }
        if config.catalogue.tracks == 0 {
            return Err(ShopError::Config(
                "the catalogue needs at least one track".into(),
            ));
        }
        let catalogue = Catalogue::generate(&config.catalogue);
        let pages = (0..catalogue.releases.len())
            .collect::<Vec<_>>()
            .chunks(config.releases_per_page)
            .map(|c| c.to_vec())
            .collect();
        Ok(ShopState {
            config,
            catalogue,
            pages,
            started: Instant::now(),
            log: Mutex::new(Vec::new()),
            attempts: Mutex::new(HashMap::new()),
            previews: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
        })
    }

    fn truth(&self) -> GroundTruth {
        let template = self.config.template;
        let mut tracks = Vec::with_capacity(self.catalogue.track_count());
        for (page_index, releases) in self.pages.iter().enumerate() {
            let page = page_index + 1;
            let malformed = self.config.faults.malformed_pages.contains(&page);
            for &r in releases {
                let release = &self.catalogue.releases[r];
                for track in &release.tracks {
                    tracks.push(TruthTrack {
                        shop_id: track.shop_id.clone(),
                        artist: release.artist_credit.clone(),
                        release_title: release.title.clone(),
                        track_name: track.name.clone(),
                        duration_s: track.duration_s,
                        label: release.label.clone(),
                        catalogue_number: release.catalogue_number.clone(),
                        release_date: release.release_date.format("%Y-%m-%d").to_string(),
                        genre: release.genre.display_name().to_string(),
                        genre_slug: release.genre.slug().to_string(),
                        preview_path: template.preview_path(&track.shop_id),
                        page,
                        page_path: template.page_path(page),
                        on_malformed_page: malformed,
                        preview_fault: track.preview_fault,
                        bitrate_kbps: track.bitrate_kbps,
                    });
                }
            }
        }
        GroundTruth {
            seed: self.config.catalogue.seed,
            template,
            pages: self.pages.len(),
            preview_seconds: self.config.preview_seconds,
            tracks,
        }
    }

    /// A number in [0, 1) fixed by the seed, the path and how often it was asked for,
    /// so faults are reproducible and a retry can succeed.
    fn roll(&self, path: &str, salt: &str) -> f64 {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let n = attempts.entry(format!("{salt}{path}")).or_insert(0);
            *n += 1;
            *n
        };
        let mut hasher = Sha256::new();
        hasher.update(self.config.catalogue.seed.to_le_bytes());
        hasher.update(salt.as_bytes());
        hasher.update(path.as_bytes());
        hasher.update(attempt.to_le_bytes());
        let digest = hasher.finalize();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        (u64::from_le_bytes(word) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn record(
        &self,
        arrived: Duration,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        status: u16,
        fault: Option<String>,
    ) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let seq = log.len() as u64;
        log.push(RequestRecord {
            seq,
            at: arrived,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            method: method.to_string(),
            path: path.to_string(),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            status,
            fault,
        });
    }

    fn preview_bytes(&self, shop_id: &str) -> Option<Result<Bytes, synth::SynthError>> {
        let (release, track) = self.catalogue.find_track(shop_id)?;
        let seconds = self.config.preview_seconds;
        let key = format!("{shop_id}-{seconds}-{}", track.bitrate_kbps);
        if let Some(hit) = self
            .previews
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(Ok(hit.clone()));
        }
        let disk_path = self
            .config
            .preview_cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{key}.mp3", self.config.catalogue.seed)));
        if let Some(bytes) = disk_path.as_ref().and_then(|p| std::fs::read(p).ok()) {
            let bytes = Bytes::from(bytes);
            self.remember(key, bytes.clone());
            return Some(Ok(bytes));
        }
        let encoded =
            synth::preview_mp3(release.genre, track.audio_seed, seconds, track.bitrate_kbps);
        Some(encoded.map(|mp3| {
            if let Some(path) = disk_path {
                // A failed cache write only costs a re-synthesis later.
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, &mp3).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
            let bytes = Bytes::from(mp3);
            self.remember(key, bytes.clone());
            bytes
        }))
    }

    fn remember(&self, key: String, bytes: Bytes) {
        let mut cache = self.previews.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a long demo must not keep every preview in memory.
        if cache.len() >= 512 {
            cache.clear();
        }
        cache.insert(key, bytes);
    }
}

/// The ground truth for `config` without starting a server.
pub fn ground_truth(config: &ShopConfig) -> Result<GroundTruth, ShopError> {
    Ok(ShopState::new(config.clone())?.truth())
}

/// A running shop. Dropping it stops the server.
pub struct ShopHandle {
    addr: SocketAddr,
    state: Arc<ShopState>,
    task: tokio::task::JoinHandle<()>,
}

impl ShopHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Absolute URL of listing page 1, where a crawl starts.
    pub fn start_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url(),
            self.state.config.template.page_path(1)
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    pub fn truth(&self) -> GroundTruth {
        self.state.truth()
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.state.catalogue
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops serving; hung responses are released at once.
    pub fn shutdown(&self) {
        self.state.cancel.cancel();
        self.task.abort();
    }
}

impl Drop for ShopHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the shop on `addr` (use port 0 for any free port) inside the current runtime.
pub async fn start(config: ShopConfig, addr: SocketAddr) -> Result<ShopHandle, ShopError> {
    let state = Arc::new(ShopState::new(config)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ShopError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ShopError::Bind { addr, source })?;
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let cancel = state.cancel.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "shop server stopped");
        }
    });
    tracing::info!(%addr, "shop simulator listening");
    Ok(ShopHandle { addr, state, task })
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn redirect(to: &str) -> Response {
    let mut response = text(StatusCode::FOUND, "text/plain", "");
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

async fn handle(
    State(state): State<Arc<ShopState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let arrived = state.started.elapsed();
    let path = uri.path().to_string();
    let full = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let template = state.config.template;

    // Paths without faults: robots, the admin endpoints and the redirect loop.
    match path.as_str() {
        "/robots.txt" => {
            state.record(arrived, &method, &full, &headers, 200, None);
            return text(
                StatusCode::OK,
                "text/plain",
                robots_txt(state.config.crawl_delay_s),
            );
        }
        "/__shopsim/truth" => {
            state.record(arrived, &method, &full, &headers, 200, None);
            let body = serde_json::to_vec(&state.truth()).unwrap_or_default();
            return text(StatusCode::OK, "application/json", body);
        }
        "/__shopsim/requests" => {
            state.record(arrived, &method, &full, &headers, 200, None);
            let log = state.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return text(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&log).unwrap_or_default(),
            );
        }
        "/loop/a" => {
            state.record(
                arrived,
                &method,
                &full,
                &headers,
                302,
                Some("redirect_loop".into()),
            );
            return redirect("/loop/b");
        }
        "/loop/b" => {
            state.record(
                arrived,
                &method,
                &full,
                &headers,
                302,
                Some("redirect_loop".into()),
            );
            return redirect("/loop/a");
        }
        _ => {}
    }

    let page = template.page_from_path(&path, uri.query());
    let members_page = path == "/members/back-cat/";
    let preview_id = Template::shop_id_from_preview_path(&path);
    if page.is_none() && preview_id.is_none() && !members_page {
        state.record(arrived, &method, &full, &headers, 404, None);
        return text(StatusCode::NOT_FOUND, "text/plain", "not found");
    }

    let faults = &state.config.faults;
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let roll = state.roll(&full, "fault");
    if roll < faults.error_rate && !faults.error_statuses.is_empty() {
        let pick = ((roll / faults.error_rate) * faults.error_statuses.len() as f64) as usize;
        let status = faults.error_statuses[pick.min(faults.error_statuses.len() - 1)];
        let with_retry_after = matches!(status, 429 | 503)
            && state.roll(&full, "retry-after") < faults.retry_after_rate;
        state.record(
            arrived,
            &method,
            &full,
            &headers,
            status,
            Some(status.to_string()),
        );
        let mut response = text(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "text/plain",
            "try again later",
        );
        if with_retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(faults.retry_after_s));
        }
        return response;
    }
    if roll < faults.error_rate + faults.hang_rate {
        state.record(arrived, &method, &full, &headers, 0, Some("hang".into()));
        tokio::select! {
            _ = tokio::time::sleep(faults.hang) => {}
            _ = state.cancel.cancelled() => {}
        }
        return text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "hung");
    }

    if let Some(page) = page.or(members_page.then_some(1)) {
        let Some(release_indices) = state.pages.get(page - 1) else {
            state.record(arrived, &method, &full, &headers, 404, None);
            return text(StatusCode::NOT_FOUND, "text/plain", "no such page");
        };
        let releases: Vec<_> = release_indices
            .iter()
            .map(|&i| &state.catalogue.releases[i])
            .collect();
        let malformed = faults.malformed_pages.contains(&page);
        let html = render_page(
            template,
            &PageContext {
                page,
                pages: state.pages.len(),
                releases: &releases,
                state: if malformed {
                    PageState::Malformed
                } else {
                    PageState::Normal
                },
            },
        );
        state.record(
            arrived,
            &method,
            &full,
            &headers,
            200,
            malformed.then(|| "malformed".to_string()),
        );
        return text(StatusCode::OK, "text/html; charset=utf-8", html);
    }

    let shop_id = preview_id.unwrap_or_default();
    let fault = state
        .catalogue
        .find_track(&shop_id)
        .and_then(|(_, t)| t.preview_fault);
    if fault == Some(PreviewFault::Missing) {
        state.record(
            arrived,
            &method,
            &full,
            &headers,
            404,
            Some("missing_preview".into()),
        );
        return text(StatusCode::NOT_FOUND, "text/plain", "no preview");
    }
    let worker_state = state.clone();
    let id = shop_id.clone();
    let made = tokio::task::spawn_blocking(move || worker_state.preview_bytes(&id)).await;
    let bytes = match made {
        Ok(Some(Ok(bytes))) => bytes,
        Ok(None) => {
            state.record(arrived, &method, &full, &headers, 404, None);
            return text(StatusCode::NOT_FOUND, "text/plain", "no such track");
        }
        Ok(Some(Err(error))) => {
            tracing::error!(%error, shop_id, "preview synthesis failed");
            state.record(
                arrived,
                &method,
                &full,
                &headers,
                500,
                Some("synthesis".into()),
            );
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                error.to_string(),
            );
        }
        Err(error) => {
            state.record(
                arrived,
                &method,
                &full,
                &headers,
                500,
                Some("synthesis".into()),
            );
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                error.to_string(),
            );
        }
    };
    let bytes = match fault {
        Some(PreviewFault::Truncated) => bytes.slice(..bytes.len() / 2),
        Some(PreviewFault::Corrupt) => {
            let mut damaged = bytes.to_vec();
            let middle = damaged.len() / 2;
            let end = (middle + 4096).min(damaged.len());
            let mut x = 0x9e37_79b9u32;
            for b in &mut damaged[middle..end] {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            Bytes::from(damaged)
        }
        _ => bytes,
    };
    let fault_name = fault.map(|f| format!("{f:?}").to_ascii_lowercase());
    state.record(arrived, &method, &full, &headers, 200, fault_name);
    text(StatusCode::OK, "audio/mpeg", bytes)
}
