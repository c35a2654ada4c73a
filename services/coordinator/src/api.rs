//! The job commands over HTTP, JSON in and out. `deepcuts-coordinator
//! worker` serves these on its ops listener (`ops.listen`, next to
//! `/metrics` and `/health/*`), so a deployment has one port to reach; the
//! API has no authentication of its own, so that port must stay inside the
//! cluster.
//!
//! | route | does | answers |
//! | --- | --- | --- |
//! | `POST /api/jobs` | submit a [`JobSpec`] | 201 `{job_id, status, model_id}`; 400 invalid spec; 409 exists |
//! | `GET /api/jobs` | every job, newest first | 200 `[JobSummary]` |
//! | `GET /api/jobs/{id}` | the job's report (as `deepcuts job status --json`) | 200 [`JobReport`]; 404 |
//! | `POST /api/jobs/{id}/cancel` | request a cancel | 202 `{job_id, cancel_requested}`; 404 |
//! | `POST /api/jobs/{id}/retry-failed` | request a retry of the failed units | 202 [`RetrySummary`] (200 when nothing is retried); 404; 409 cancelled or done |
//!
//! Errors are `{"error": "..."}`. Cancel and retry are applied by the
//! coordinator within a poll interval, hence 202.
//!
//! [`JobReport`]: crate::report::JobReport
//! [`RetrySummary`]: crate::driver::RetrySummary

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deepcuts_core::queue::QueueHandle;
use deepcuts_core::storage::Store;
use serde_json::json;

use crate::driver::{
    is_job_id, list_jobs, load_job, request_cancel, request_retry_failed, submit, CoordinatorError,
};
use crate::job::{JobSpec, JobState};
use crate::report::{job_report, JobSummary};

struct Api {
    store: Store,
    queue: QueueHandle,
}

/// The API's routes, ready to serve or merge into another router.
pub fn router(store: Store, queue: QueueHandle) -> Router {
    Router::new()
        .route("/api/jobs", get(list).post(create))
        .route("/api/jobs/{id}", get(status))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/retry-failed", post(retry_failed))
        .with_state(Arc::new(Api { store, queue }))
}

/// An error answer: a status code and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(err: CoordinatorError) -> Self {
        let code = match &err {
            CoordinatorError::Invalid { .. } => StatusCode::BAD_REQUEST,
            CoordinatorError::Exists(_) | CoordinatorError::NotRetryable { .. } => {
                StatusCode::CONFLICT
            }
            CoordinatorError::NoSuchJob(_) => StatusCode::NOT_FOUND,
            CoordinatorError::Store(_) | CoordinatorError::Queue(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CoordinatorError::BadState { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if code.is_server_error() {
            tracing::error!(error = %err, "api request failed");
        }
        ApiError(code, err.to_string())
    }
}

fn no_such_job(id: &str) -> ApiError {
    CoordinatorError::NoSuchJob(id.to_owned()).into()
}

/// A path id that cannot name a job is a missing job, not a store error.
async fn existing_job(api: &Api, id: &str) -> Result<JobState, ApiError> {
    if !is_job_id(id) {
        return Err(no_such_job(id));
    }
    load_job(&api.store, id)
        .await?
        .ok_or_else(|| no_such_job(id))
}

async fn create(
    State(api): State<Arc<Api>>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    // Parsed here rather than by axum's `Json`, so a malformed body is a 400
    // in the API's error shape whatever its content type.
    let spec: JobSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid job spec: {e}")))?;
    let job = submit(&api.store, &api.queue, spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "job_id": job.job_id(),
            "status": job.status.as_str(),
            "model_id": job.model_id,
        })),
    ))
}

async fn list(State(api): State<Arc<Api>>) -> Result<Json<Vec<JobSummary>>, ApiError> {
    let jobs = list_jobs(&api.store).await?;
    Ok(Json(jobs.iter().map(JobSummary::from).collect()))
}

async fn status(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = existing_job(&api, &id).await?;
    let report = job_report(&api.store, &job).await?;
    Ok(Json(report).into_response())
}

async fn cancel(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    existing_job(&api, &id).await?;
    request_cancel(&api.store, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": id, "cancel_requested": true })),
    )
        .into_response())
}

async fn retry_failed(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    existing_job(&api, &id).await?;
    let summary = request_retry_failed(&api.store, &id).await?;
    let code = if summary.units.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(summary)).into_response())
}
