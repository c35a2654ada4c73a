//! Logging: readable lines on a terminal, JSON lines in containers.
//!
//! Units of work run inside a span carrying `job_id` and the unit's id (see
//! [`crate::worker`]), and both formats print the span's fields on every line.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON inside a container (Kubernetes or a container runtime), else pretty.
    #[default]
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub format: LogFormat,
    /// `tracing` filter directives; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            // symphonia warns once per undecodable frame (every preview cut
            // from a longer file starts mid-reservoir); the transcoder counts
            // bad packets itself, so its warnings would only flood the logs.
            filter: "info,symphonia=error".to_owned(),
        }
    }
}

/// True when running in a container, where logs are collected as JSON.
pub fn in_container() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("container").is_some()
        || std::path::Path::new("/.dockerenv").exists()
}

impl LogFormat {
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if in_container() => LogFormat::Json,
            LogFormat::Auto => LogFormat::Pretty,
            other => other,
        }
    }
}

/// Installs the global subscriber, writing to stderr. Calling it twice is
/// harmless (the second call does nothing), which tests rely on.
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format.resolve() {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        _ => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // Already initialised (tests, or an embedding process): keep the first.
    let _ = result;
}
