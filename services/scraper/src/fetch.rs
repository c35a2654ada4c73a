//! Polite, capped HTTP fetching: host allow-list, robots.txt (with `Crawl-delay`),
//! a per-host rate limit and concurrency cap, retries with exponential backoff and
//! jitter that honour `Retry-After`, and limits on redirects, body size and time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use texting_robots::Robot;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::spec::{CrawlSpec, Politeness, Safety};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: host is not in the crawl's allow-list")]
    HostNotAllowed { url: String },
    #[error("{url}: only http and https can be fetched")]
    UnsupportedScheme { url: String },
    #[error("{url}: disallowed by robots.txt")]
    DisallowedByRobots { url: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: more than {limit} redirects")]
    TooManyRedirects { url: String, limit: u32 },
    #[error("{url}: redirect without a usable Location")]
    BadRedirect { url: String },
    #[error("{url}: body larger than {limit} bytes")]
    BodyTooLarge { url: String, limit: u64 },
    #[error("{url}: gave up after {attempts} attempts, last: {last}")]
    RetriesExhausted {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl FetchError {
    /// Whether trying the same unit again later may succeed (the server was busy or
    /// unreachable), as opposed to a verdict that will not change.
    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::RetriesExhausted { .. })
    }

    /// A short machine-readable kind for failure records.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::HostNotAllowed { .. } => "host_not_allowed",
            FetchError::UnsupportedScheme { .. } => "unsupported_scheme",
            FetchError::DisallowedByRobots { .. } => "robots_disallowed",
            FetchError::Status { .. } => "http_status",
            FetchError::TooManyRedirects { .. } => "too_many_redirects",
            FetchError::BadRedirect { .. } => "bad_redirect",
            FetchError::BodyTooLarge { .. } => "body_too_large",
            FetchError::RetriesExhausted { .. } => "retries_exhausted",
            FetchError::Client(_) => "client",
        }
    }
}

/// A successful fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Where the body came from, after redirects.
    pub url: Url,
    pub body: Bytes,
    /// Requests it took, retries and redirects included.
    pub requests: u32,
}

/// Spacing and concurrency for one host.
struct HostGate {
    permits: Semaphore,
    interval: Mutex<Duration>,
    next_slot: Mutex<Option<Instant>>,
}

impl HostGate {
    async fn acquire(&self) -> tokio::sync::SemaphorePermit<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("host semaphore is never closed");
        let wait_until = {
            let interval = *self.interval.lock().unwrap_or_else(|e| e.into_inner());
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + interval);
            slot
        };
        tokio::time::sleep_until(wait_until).await;
        permit
    }
}

enum RobotsRules {
    AllowAll,
    DisallowAll,
    Parsed(Box<Robot>),
}

impl RobotsRules {
    fn allowed(&self, url: &Url) -> bool {
        match self {
            RobotsRules::AllowAll => true,
            RobotsRules::DisallowAll => false,
            RobotsRules::Parsed(robot) => robot.allowed(url.as_str()),
        }
    }
}

/// One fetcher per crawl; clones share its gates and robots cache.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<FetcherInner>,
}

struct FetcherInner {
    client: reqwest::Client,
    politeness: Politeness,
    safety: Safety,
    allowed_hosts: HashSet<String>,
    gates: Mutex<HashMap<String, Arc<HostGate>>>,
    robots: Mutex<HashMap<String, Arc<OnceCell<Arc<RobotsRules>>>>>,
}

/// `host` or `host:port` when the port is not the scheme's default.
pub fn host_key(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Parses `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

enum Attempt {
    Done(reqwest::Response),
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

impl Fetcher {
    pub fn new(spec: &CrawlSpec) -> Result<Fetcher, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(spec.politeness.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(spec.safety.connect_timeout_ms))
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        Ok(Fetcher {
            inner: Arc::new(FetcherInner {
                client,
                politeness: spec.politeness.clone(),
                safety: spec.safety.clone(),
                allowed_hosts: spec.allowed_hosts().into_iter().collect(),
                gates: Mutex::new(HashMap::new()),
                robots: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn gate(&self, url: &Url) -> Arc<HostGate> {
        let mut gates = self.inner.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry(host_key(url))
            .or_insert_with(|| {
                let rps = self.inner.politeness.requests_per_second;
                let interval = if rps > 0.0 {
                    Duration::from_secs_f64(1.0 / rps)
                } else {
                    Duration::ZERO
                };
                Arc::new(HostGate {
                    permits: Semaphore::new(self.inner.politeness.concurrency_per_host.max(1)),
                    interval: Mutex::new(interval),
                    next_slot: Mutex::new(None),
                })
            })
            .clone()
    }

    fn check_host(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::UnsupportedScheme {
                url: url.to_string(),
            });
        }
        let host = url.host_str().unwrap_or_default();
        if self.inner.allowed_hosts.contains(&host_key(url))
            || self.inner.allowed_hosts.contains(host)
        {
            Ok(())
        } else {
            Err(FetchError::HostNotAllowed {
                url: url.to_string(),
            })
        }
    }

    /// The robots rules of `url`'s origin, fetched once per crawl. A robots.txt that
    /// cannot be fetched right now is an error for this request and is asked for again
    /// next time, rather than remembered.
    async fn robots(&self, url: &Url) -> Result<Arc<RobotsRules>, FetchError> {
        let origin = url.origin().ascii_serialization();
        let cell = {
            let mut robots = self.inner.robots.lock().unwrap_or_else(|e| e.into_inner());
            robots.entry(origin.clone()).or_default().clone()
        };
        let rules = cell
            .get_or_try_init(|| async {
                let robots_url = Url::parse(&format!("{origin}/robots.txt")).map_err(|_| {
                    FetchError::UnsupportedScheme {
                        url: url.to_string(),
                    }
                })?;
                let agent = self
                    .inner
                    .politeness
                    .user_agent
                    .split('/')
                    .next()
                    .unwrap_or("deepcuts-scraper")
                    .to_string();
                let response = self.request(&robots_url).await?;
                let rules = if response.status().is_success() {
                    match self.read_body(&robots_url, response).await {
                        Ok(body) => match Robot::new(&agent, &body) {
                            Ok(robot) => RobotsRules::Parsed(Box::new(robot)),
                            // Unparseable rules give no permission to rely on.
                            Err(_) => RobotsRules::DisallowAll,
                        },
                        Err(error) => return Err(error),
                    }
                } else if response.status().is_client_error() {
                    // No robots.txt means no restrictions.
                    RobotsRules::AllowAll
                } else {
                    RobotsRules::DisallowAll
                };
                if let RobotsRules::Parsed(robot) = &rules {
                    if let Some(delay) = robot.delay.filter(|d| d.is_finite() && *d > 0.0) {
                        let gate = self.gate(url);
                        let mut interval = gate.interval.lock().unwrap_or_else(|e| e.into_inner());
                        *interval = (*interval).max(Duration::from_secs_f32(delay.min(120.0)));
                        tracing::info!(
                            origin,
                            crawl_delay_s = delay,
                            "robots.txt sets a crawl delay"
                        );
                    }
                }
                Ok(Arc::new(rules))
            })
            .await?;
        Ok(rules.clone())
    }

    /// Sends one GET through the host's gate, retrying what may pass on a later try.
    async fn request(&self, url: &Url) -> Result<reqwest::Response, FetchError> {
        let safety = &self.inner.safety;
        let gate = self.gate(url);
        let mut last = String::new();
        for attempt in 1..=safety.max_attempts {
            let outcome = {
                let _permit = gate.acquire().await;
                match self
                    .inner
                    .client
                    .get(url.clone())
                    .timeout(safety.timeout())
                    .send()
                    .await
                {
                    Ok(response) => {
                        let status = response.status();
                        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                            Attempt::Retry {
                                reason: format!("HTTP {}", status.as_u16()),
                                after: retry_after(response.headers()),
                            }
                        } else {
                            Attempt::Done(response)
                        }
                    }
                    Err(error) => Attempt::Retry {
                        reason: if error.is_timeout() {
                            format!("timed out after {} ms", safety.timeout_ms)
                        } else {
                            format!("transport error: {error}")
                        },
                        after: None,
                    },
                }
            };
            match outcome {
                Attempt::Done(response) => return Ok(response),
                Attempt::Retry { reason, after } => {
                    if attempt == safety.max_attempts {
                        last = reason;
                        break;
                    }
                    let wait = match after {
                        Some(after) => after.min(Duration::from_millis(safety.max_retry_after_ms)),
                        None => backoff(safety, attempt),
                    };
                    tracing::debug!(%url, attempt, wait_ms = wait.as_millis() as u64, reason, "retrying request");
                    last = reason;
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Err(FetchError::RetriesExhausted {
            url: url.to_string(),
            attempts: safety.max_attempts,
            last,
        })
    }

    async fn read_body(
        &self,
        url: &Url,
        mut response: reqwest::Response,
    ) -> Result<Bytes, FetchError> {
        let limit = self.inner.safety.max_body_bytes;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(FetchError::BodyTooLarge {
                url: url.to_string(),
                limit,
            });
        }
        let mut body = BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > limit {
                        return Err(FetchError::BodyTooLarge {
                            url: url.to_string(),
                            limit,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(error) => {
                    return Err(FetchError::RetriesExhausted {
                        url: url.to_string(),
                        attempts: 1,
                        last: format!("body read failed: {error}"),
                    })
                }
            }
        }
    }

    /// Fetches `url`, following redirects within the allow-list and robots rules.
    pub async fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        let mut current = url.clone();
        let mut redirects = 0u32;
        let mut requests = 0u32;
        loop {
            self.check_host(&current)?;
            if !self.robots(&current).await?.allowed(&current) {
                return Err(FetchError::DisallowedByRobots {
                    url: current.to_string(),
                });
            }
            let response = self.request(&current).await?;
            requests += 1;
            let status = response.status();
            if status.is_redirection() {
                redirects += 1;
                if redirects > self.inner.safety.max_redirects {
                    return Err(FetchError::TooManyRedirects {
                        url: url.to_string(),
                        limit: self.inner.safety.max_redirects,
                    });
                }
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| current.join(v).ok())
                    .ok_or_else(|| FetchError::BadRedirect {
                        url: current.to_string(),
                    })?;
                current = location;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: current.to_string(),
                    status: status.as_u16(),
                });
            }
            let body = self.read_body(&current, response).await?;
            return Ok(Fetched {
                url: current,
                body,
                requests,
            });
        }
    }
}

/// Exponential backoff with jitter: half of `base * 2^(attempt-1)` (capped) is
/// fixed and the other half random, so retries of many units spread out.
fn backoff(safety: &Safety, attempt: u32) -> Duration {
    let exponential = safety
        .backoff_base_ms
        .saturating_mul(1u64 << (attempt - 1).min(20))
        .min(safety.backoff_max_ms);
    let half = exponential / 2;
    Duration::from_millis(half + rand::rng().random_range(0..=half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let safety = Safety {
            backoff_base_ms: 100,
            backoff_max_ms: 1000,
            ..Safety::default()
        };
        for _ in 0..50 {
            let first = backoff(&safety, 1).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let third = backoff(&safety, 3).as_millis();
            assert!((200..=400).contains(&third), "{third}");
            let late = backoff(&safety, 12).as_millis();
            assert!((500..=1000).contains(&late), "{late}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        headers.insert(RETRY_AFTER, later.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn host_keys_and_allow_list() {
        let spec = CrawlSpec::new("http://127.0.0.1:4000/list");
        let fetcher = Fetcher::new(&spec).unwrap();
        assert!(fetcher
            .check_host(&Url::parse("http://127.0.0.1:4000/x").unwrap())
            .is_ok());
        assert!(matches!(
            fetcher.check_host(&Url::parse("http://127.0.0.1:4001/x").unwrap()),
            Err(FetchError::HostNotAllowed { .. })
        ));
        assert!(matches!(
            fetcher.check_host(&Url::parse("http://elsewhere.test/x").unwrap()),
            Err(FetchError::HostNotAllowed { .. })
        ));
        assert_eq!(
            host_key(&Url::parse("https://a.test:443/").unwrap()),
            "a.test"
        );
    }
}
