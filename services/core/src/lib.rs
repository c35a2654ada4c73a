//! Plumbing shared by every deepcuts service.
//!
//! Each module is one concern, and every service reaches storage, queues and
//! the outside world only through these:
//! - [`storage`]: one small object-store trait, backed by S3 or local files;
//! - [`queue`]: one small work-queue trait, backed by RabbitMQ or in-process;
//! - [`proto`]: the messages that cross the queues (generated from `proto/`);
//! - [`keys`] and [`parquet_io`]: where artefacts live and how they are written;
//! - [`failures`]: the record a unit leaves behind when it fails for good;
//! - [`worker`]: the consume loop every worker plugs its handler into;
//! - [`config`], [`telemetry`], [`metrics`], [`ops_http`], [`shutdown`]:
//!   what a long-running service needs around its work, started together
//!   by [`service::Service`].

pub mod config;
pub mod failures;
pub mod keys;
pub mod metrics;
pub mod ops_http;
pub mod parquet_io;
pub mod proto;
pub mod queue;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod worker;

/// Milliseconds since the Unix epoch, for event and record timestamps.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
