//! The operations endpoint every long-running service exposes:
//! `/metrics` (Prometheus), `/health/livez` and `/health/readyz`.
//! Readiness checks that the broker and the store answer, and turns false as
//! soon as the service starts draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::queue::QueueHandle;
use crate::storage::Store;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: String,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".to_owned(),
        }
    }
}

/// What readiness depends on.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pub store: Option<Store>,
    pub queue: Option<QueueHandle>,
    /// Cancelled when the service drains; readiness then reports 503.
    pub draining: CancellationToken,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

async fn metrics_handler() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::metrics().encode(),
    )
        .into_response()
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    let mut problems = Vec::new();
    if readiness.draining.is_cancelled() {
        problems.push("draining".to_owned());
    }
    if let Some(store) = &readiness.store {
        match tokio::time::timeout(CHECK_TIMEOUT, store.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => problems.push(format!("store: {err}")),
            Err(_) => problems.push("store: check timed out".to_owned()),
        }
    }
    if let Some(queue) = &readiness.queue {
        match tokio::time::timeout(CHECK_TIMEOUT, queue.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => problems.push(format!("queue: {err}")),
            Err(_) => problems.push("queue: check timed out".to_owned()),
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n")).into_response()
    }
}

/// The ops routes, to serve alone or merge into a service's own router.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health/livez", get(livez))
        .route("/health/readyz", get(readyz))
        .with_state(Arc::new(readiness))
}

/// Binds `listen` and serves the ops routes until `stop` is cancelled.
/// Returns the bound address (useful with port 0).
pub async fn serve(
    listen: &str,
    readiness: Readiness,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    serve_with(listen, readiness, Router::new(), stop).await
}

/// [`serve`], with a service's own routes on the same listener. `extra`
/// must not define the ops paths.
pub async fn serve_with(
    listen: &str,
    readiness: Readiness,
    extra: Router,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "ops endpoint listening (/metrics, /health/livez, /health/readyz)");
    let app = router(readiness).merge(extra);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "ops endpoint failed");
        }
    });
    Ok(addr)
}
