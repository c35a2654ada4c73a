//! Layered configuration: built-in defaults, then an optional TOML file, then
//! `DEEPCUTS__SECTION__KEY` environment variables. Unknown keys are errors, so
//! a typo never silently falls back to a default.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ops_http::OpsConfig;
use crate::queue::QueueConfig;
use crate::storage::StoreConfig;
use crate::telemetry::TelemetryConfig;
use crate::worker::WorkerConfig;

/// Prefix of the environment overrides; `__` separates nested keys.
pub const ENV_PREFIX: &str = "DEEPCUTS__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: String },
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// Loads `T` from defaults, the file (if given) and the environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    load_from_env(file, Env::prefixed(ENV_PREFIX).split("__"))
}

fn load_from_env<T>(file: Option<&Path>, env: Env) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile {
                path: path.display().to_string(),
            });
        }
        figment = figment.merge(Toml::file(path));
    }
    figment
        .merge(env)
        .extract()
        .map_err(|err| ConfigError::Invalid(Box::new(err)))
}

/// The settings every service shares, plus the service's own `[settings]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig<S = NoSettings> {
    pub store: StoreConfig,
    pub queue: QueueConfig,
    pub telemetry: TelemetryConfig,
    pub ops: OpsConfig,
    pub worker: WorkerConfig,
    pub settings: S,
}

/// For services with nothing of their own to configure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        // figment's Env reads the process environment; tests use a private
        // prefix per test so parallel tests never see each other's variables.
        let prefix = format!("DEEPCUTS_TEST_{}__", uuid::Uuid::new_v4().simple());
        for (k, v) in vars {
            std::env::set_var(format!("{prefix}{k}"), v);
        }
        Env::prefixed(&prefix).split("__")
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deepcuts.toml");
        std::fs::write(
            &path,
            "[store]\nurl = \"s3://bucket/p\"\n[queue]\nurl = \"amqp://127.0.0.1:5672/%2f\"\ndelivery_limit = 3\n",
        )
        .unwrap();
        let config: ServiceConfig = load_from_env(
            Some(&path),
            env(&[
                ("QUEUE__DELIVERY_LIMIT", "7"),
                ("STORE__S3__ENDPOINT", "http://127.0.0.1:8333"),
            ]),
        )
        .unwrap();
        assert_eq!(config.store.url, "s3://bucket/p");
        assert_eq!(config.queue.url, "amqp://127.0.0.1:5672/%2f");
        assert_eq!(
            config.queue.delivery_limit, 7,
            "environment wins over the file"
        );
        assert_eq!(
            config.store.s3.endpoint.as_deref(),
            Some("http://127.0.0.1:8333")
        );
        assert_eq!(config.worker, WorkerConfig::default());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deepcuts.toml");
        std::fs::write(&path, "[store]\nurll = \"typo\"\n").unwrap();
        let err = load_from_env::<ServiceConfig>(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
        let err = load_from_env::<ServiceConfig>(None, env(&[("QUEUE__NOPE", "1")])).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn a_named_file_must_exist() {
        let err = load::<ServiceConfig>(Some(Path::new("/nonexistent/deepcuts.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }));
    }
}
