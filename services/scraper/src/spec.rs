//! The crawl job: where to start, how to read the pages, how much, and how politely.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::profile::{ProfileError, ProfileSpec, SiteProfile, JUNO_PROFILE};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the crawl needs at least one start URL")]
    NoStartUrl,
    #[error("start URL {url:?} is not an absolute http(s) URL")]
    BadStartUrl { url: String },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("crawl spec is not valid JSON: {0}")]
    Json(String),
    #[error("invalid crawl spec: {0}")]
    Invalid(String),
}

/// Limits on how much of the shop one job takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Listing pages to fetch in the whole job.
    pub max_pages: Option<u32>,
    /// Tracks to keep in the whole job; the page that reaches it is cut short.
    pub max_tracks: Option<u64>,
    /// Keep only these genres (compared loosely: `drum-and-bass` = `Drum & Bass`);
    /// every genre when empty.
    pub genres: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Politeness {
    /// Requests per second to one host; 0 turns the limit off (robots.txt's
    /// `Crawl-delay` still applies).
    pub requests_per_second: f64,
    pub concurrency_per_host: usize,
    pub user_agent: String,
}

impl Default for Politeness {
    fn default() -> Self {
        Politeness {
            requests_per_second: 1.0,
            concurrency_per_host: 2,
            user_agent: format!(
                "deepcuts-scraper/{} (+catalogue crawler)",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

/// Caps that keep a bad or hostile server from stalling or flooding the crawler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    /// Hosts (`name` or `name:port`) the crawl may fetch from; the start URLs'
    /// hosts when empty.
    pub allowed_hosts: Vec<String>,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_body_bytes: u64,
    pub max_redirects: u32,
    /// Tries per request, the first included.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A longer `Retry-After` is cut to this.
    pub max_retry_after_ms: u64,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            allowed_hosts: Vec::new(),
            timeout_ms: 20_000,
            connect_timeout_ms: 5_000,
            max_body_bytes: 8 * 1024 * 1024,
            max_redirects: 5,
            max_attempts: 6,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            max_retry_after_ms: 60_000,
        }
    }
}

impl Safety {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A crawl job. Stored as JSON beside the job so every worker reads the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrawlSpec {
    pub start_urls: Vec<String>,
    /// The site profile itself (not its name), so that workers need no local file.
    pub profile: ProfileSpec,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub politeness: Politeness,
    #[serde(default)]
    pub safety: Safety,
    /// Transcoder front-end preset named in the transcode tasks.
    #[serde(default = "default_frontend")]
    pub frontend: String,
}

fn default_frontend() -> String {
    "default".to_string()
}

impl CrawlSpec {
    /// A spec with the built-in `juno` profile and default politeness.
    pub fn new(start_url: impl Into<String>) -> CrawlSpec {
        CrawlSpec {
            start_urls: vec![start_url.into()],
            profile: toml::from_str(JUNO_PROFILE).expect("the built-in juno profile is valid"),
            limits: Limits::default(),
            politeness: Politeness::default(),
            safety: Safety::default(),
            frontend: default_frontend(),
        }
    }

    pub fn with_profile(mut self, profile: &SiteProfile) -> CrawlSpec {
        self.profile = profile.spec.clone();
        self
    }

    /// Checks the spec and compiles its profile.
    pub fn validate(&self) -> Result<SiteProfile, SpecError> {
        if self.start_urls.is_empty() {
            return Err(SpecError::NoStartUrl);
        }
        for url in &self.start_urls {
            let ok = Url::parse(url)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(SpecError::BadStartUrl { url: url.clone() });
            }
        }
        if self.politeness.concurrency_per_host == 0 {
            return Err(SpecError::Invalid(
                "politeness.concurrency_per_host must be at least 1".into(),
            ));
        }
        if !(self.politeness.requests_per_second >= 0.0
            && self.politeness.requests_per_second.is_finite())
        {
            return Err(SpecError::Invalid(
                "politeness.requests_per_second must be 0 or more".into(),
            ));
        }
        if self.safety.max_attempts == 0 {
            return Err(SpecError::Invalid(
                "safety.max_attempts must be at least 1".into(),
            ));
        }
        Ok(SiteProfile::from_spec(self.profile.clone())?)
    }

    /// The hosts this crawl may fetch from.
    pub fn allowed_hosts(&self) -> Vec<String> {
        if !self.safety.allowed_hosts.is_empty() {
            return self.safety.allowed_hosts.clone();
        }
        self.start_urls
            .iter()
            .filter_map(|u| Url::parse(u).ok())
            .filter_map(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(port) => format!("{h}:{port}"),
                    None => h.to_string(),
                })
            })
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a crawl spec always serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<CrawlSpec, SpecError> {
        serde_json::from_slice(bytes).map_err(|e| SpecError::Json(e.to_string()))
    }

    /// Turns every wait off: for benchmarks against a local simulator.
    pub fn impolite(mut self) -> CrawlSpec {
        self.politeness.requests_per_second = 0.0;
        self.politeness.concurrency_per_host = 64;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_validates() {
        let spec = CrawlSpec::new(
            "http://127.0.0.1:4000/all/back-cat/releases/?music_product_type=single",
        );
        let back = CrawlSpec::from_json(&spec.to_json()).unwrap();
        assert_eq!(back, spec);
        assert!(back.validate().is_ok());
        assert_eq!(back.allowed_hosts(), vec!["127.0.0.1:4000".to_string()]);
        let mut bad = spec.clone();
        bad.start_urls = vec!["ftp://x/".into()];
        assert!(matches!(bad.validate(), Err(SpecError::BadStartUrl { .. })));
        bad.start_urls.clear();
        assert!(matches!(bad.validate(), Err(SpecError::NoStartUrl)));
        assert!(matches!(
            CrawlSpec::from_json(b"{\"start_urls\": 3}"),
            Err(SpecError::Json(_))
        ));
    }
}
