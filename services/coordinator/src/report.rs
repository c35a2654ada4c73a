//! The job report: counts per stage, rates, elapsed time and ETA, the
//! failures with their reasons, and the model's metrics.

use deepcuts_core::failures::{list_failures, FailureRecord};
use deepcuts_core::now_unix_ms;
use deepcuts_core::proto::Stage;
use deepcuts_core::storage::Store;
use serde::{Deserialize, Serialize};

use crate::driver::CoordinatorError;
use crate::job::{JobState, JobStatus, STAGES};

/// One line of the job list (`deepcuts job list --json`, `GET /api/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: String,
    pub status: JobStatus,
    pub model_id: String,
    pub error: Option<String>,
    pub submitted_at_unix_ms: u64,
}

impl From<&JobState> for JobSummary {
    fn from(job: &JobState) -> Self {
        Self {
            job_id: job.job_id().to_owned(),
            status: job.status,
            model_id: job.model_id.clone(),
            error: job.error.clone(),
            submitted_at_unix_ms: job.submitted_at_unix_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    pub issued: usize,
    pub done: usize,
    pub failed: usize,
    pub pending: usize,
    pub seconds: Option<f64>,
    /// Units settled per second while the stage ran.
    pub units_per_second: Option<f64>,
    /// Seconds left at the current rate, while the stage runs.
    pub eta_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job_id: String,
    pub status: &'static str,
    pub model_id: String,
    pub error: Option<String>,
    pub elapsed_seconds: f64,
    pub stages: Vec<StageReport>,
    /// Failure records of every stage (a unit can be a page, a batch or a track).
    pub failures: Vec<FailureRecord>,
    /// `models/<model>/report.json`'s summary, once training finished.
    pub model_metrics: Option<serde_json::Value>,
    pub training_progress: Option<serde_json::Value>,
}

fn stage_report(job: &JobState, stage: Stage, now: u64) -> StageReport {
    let ledger = job.ledger(stage);
    let settled = ledger.done_count() + ledger.failed_count();
    let seconds = ledger.started_at_unix_ms.map(|start| {
        let end = ledger.finished_at_unix_ms.unwrap_or(now);
        end.saturating_sub(start) as f64 / 1000.0
    });
    let rate = seconds.filter(|s| *s > 0.0).map(|s| settled as f64 / s);
    let eta = match (rate, ledger.finished_at_unix_ms) {
        (Some(rate), None) if rate > 0.0 => Some(ledger.pending() as f64 / rate),
        _ => None,
    };
    StageReport {
        stage: stage.key_name(),
        issued: ledger.issued.len(),
        done: ledger.done_count(),
        failed: ledger.failed_count(),
        pending: ledger.pending(),
        seconds,
        units_per_second: rate,
        eta_seconds: eta,
    }
}

pub async fn job_report(store: &Store, job: &JobState) -> Result<JobReport, CoordinatorError> {
    let now = now_unix_ms();
    let failures = list_failures(store.as_ref(), job.job_id(), None).await?;
    let model_metrics = match store
        .get(&format!(
            "{}report.json",
            deepcuts_core::keys::model_dir(&job.model_id)
        ))
        .await
    {
        Ok(data) => serde_json::from_slice(&data).ok(),
        Err(_) => None,
    };
    let end = job.finished_at_unix_ms.unwrap_or(now);
    Ok(JobReport {
        job_id: job.job_id().to_owned(),
        status: job.status.as_str(),
        model_id: job.model_id.clone(),
        error: job.error.clone(),
        elapsed_seconds: end.saturating_sub(job.submitted_at_unix_ms) as f64 / 1000.0,
        stages: STAGES.iter().map(|s| stage_report(job, *s, now)).collect(),
        failures,
        model_metrics,
        training_progress: job.training_progress.clone(),
    })
}
