//! deepcuts coordinator: moves jobs through their stages.
//!
//! A job ([`job::JobSpec`]) is one catalogue crawl and everything after it:
//! crawling → transcoding → training (or reusing a named model) → embedding →
//! indexing → done, or failed, or cancelled. A stage is complete when every
//! unit it issued is done or failed; the coordinator learns that from the
//! stage events every worker publishes, keeps the job's state in
//! `jobs/<job>/job.json` (no database), and issues the next stage's tasks.
//! [`driver::Coordinator::reconcile`] picks every unfinished job up again
//! after a restart. [`driver::retry_failed`] issues a job's failed units
//! again, and [`api`] offers the job commands over HTTP.

pub mod api;
pub mod driver;
pub mod job;
pub mod report;

pub use driver::{
    list_jobs, load_job, request_cancel, request_retry_failed, retry_failed, submit, Coordinator,
    CoordinatorError, RetrySummary,
};
pub use job::{IndexChoice, JobSpec, JobState, JobStatus, ModelChoice};
pub use report::{job_report, JobReport, JobSummary};
