//! The crawl worker: one `CrawlPageTask` in, one catalogue page out.
//!
//! Per task it fetches and parses the page, writes
//! `jobs/<job>/catalogue/page=<n>.parquet`, then publishes one transcode task for the
//! page's tracks and the crawl task for the next page.
//!
//! Start URLs are crawled one after another, so pages are numbered 1, 2, 3, ... over
//! the whole job and at most one page of a job is in flight. Each page leaves a small
//! state document (`jobs/<job>/crawl/state/page=<n>.json`) that says which start URL
//! it belongs to, how many tracks the job holds through it, and what comes next; the
//! next page reads it. That makes the job-wide track limit exact and lets a crawl move
//! on to the next start URL when a pager ends.
//!
//! Duplicates: a track seen twice in a job is kept on the first page that had it.
//! Each kept track leaves a marker `jobs/<job>/crawl/seen/<track_id>` holding its page
//! number; a later page skips tracks whose marker names another page, and a retried
//! page keeps its own. Because pages of a job run one at a time, the check and the
//! marker write cannot race. (Reading all earlier pages instead would cost O(n²).)
//!
//! Redelivery: all writes use fixed keys, so a retry rewrites the same objects. Once a
//! page has published its follow-up tasks its state is marked `published`; a duplicate
//! task for that page then reports the same units without publishing again, so one
//! redelivery cannot fork the rest of the crawl into two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use deepcuts_core::failures::{write_failure, FailureRecord};
use deepcuts_core::proto::{CrawlPageTask, Stage, TranscodeBatchTask};
use deepcuts_core::queue::{names, QueueHandle};
use deepcuts_core::storage::Store;
use deepcuts_core::worker::{TaskError, TaskHandler, UnitRef, UnitReport};
use deepcuts_core::{keys, parquet_io};
use futures::StreamExt;
use prost::Message;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::catalogue::{self, CatalogueRow};
use crate::crawl::{fetch_page, keep_rows, page_unit, release_failures};
use crate::fetch::Fetcher;
use crate::profile::SiteProfile;
use crate::spec::CrawlSpec;

/// What one page leaves for the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageState {
    pub page: u32,
    /// Index into the spec's start URLs.
    pub chain: usize,
    pub url: String,
    pub tracks_on_page: u64,
    /// Tracks kept in the job through this page.
    pub tracks_through: u64,
    pub next: Option<NextPage>,
    /// Whether the follow-up tasks were published.
    pub published: bool,
    pub spawned_units: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextPage {
    pub url: String,
    pub chain: usize,
}

pub fn state_key(job_id: &str, page: u32) -> String {
    format!("{}crawl/state/page={page:05}.json", keys::job_root(job_id))
}

pub fn seen_key(job_id: &str, track_id: &str) -> String {
    format!(
        "{}crawl/seen/{}",
        keys::job_root(job_id),
        keys::sanitise_unit_id(track_id)
    )
}

/// The transcode batch id of a catalogue page.
pub fn batch_id(page: u32) -> String {
    format!("page-{page:05}")
}

struct JobContext {
    spec: CrawlSpec,
    profile: SiteProfile,
    fetcher: Fetcher,
}

/// The crawl stage's handler for the core worker loop.
pub struct CrawlHandler {
    store: Store,
    queue: QueueHandle,
    jobs: Mutex<HashMap<String, Arc<JobContext>>>,
}

fn transient(e: impl std::fmt::Display) -> TaskError {
    TaskError::Transient(e.to_string())
}

/// Writes the job's crawl spec and publishes its first page.
pub async fn start_crawl(
    store: &Store,
    queue: &QueueHandle,
    job_id: &str,
    spec: &CrawlSpec,
) -> Result<(), TaskError> {
    spec.validate()
        .map_err(|e| TaskError::permanent("invalid_spec", e.to_string()))?;
    let spec_key = keys::crawl_spec(job_id);
    store
        .put(&spec_key, Bytes::from(spec.to_json()))
        .await
        .map_err(transient)?;
    let task = CrawlPageTask {
        job_id: job_id.to_string(),
        url: spec.start_urls[0].clone(),
        page_number: 1,
        crawl_spec_key: spec_key,
    };
    queue
        .publish(names::CRAWL, Bytes::from(task.encode_to_vec()))
        .await
        .map_err(transient)
}

impl CrawlHandler {
    pub fn new(store: Store, queue: QueueHandle) -> CrawlHandler {
        CrawlHandler {
            store,
            queue,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// The job's spec, profile and fetcher; one fetcher per job keeps its rate
    /// limit and robots cache across pages.
    async fn job(&self, task: &CrawlPageTask) -> Result<Arc<JobContext>, TaskError> {
        if let Some(job) = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&task.job_id)
        {
            return Ok(job.clone());
        }
        let bytes = self.store.get(&task.crawl_spec_key).await.map_err(|e| {
            if e.is_not_found() {
                TaskError::permanent("missing_spec", e.to_string())
            } else {
                transient(e)
            }
        })?;
        let spec = CrawlSpec::from_json(&bytes)
            .map_err(|e| TaskError::permanent("invalid_spec", e.to_string()))?;
        let profile = spec
            .validate()
            .map_err(|e| TaskError::permanent("invalid_spec", e.to_string()))?;
        let fetcher =
            Fetcher::new(&spec).map_err(|e| TaskError::permanent("client", e.to_string()))?;
        let job = Arc::new(JobContext {
            spec,
            profile,
            fetcher,
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task.job_id.clone(), job.clone());
        Ok(job)
    }

    async fn read_state(&self, job_id: &str, page: u32) -> Result<Option<PageState>, TaskError> {
        match self.store.get(&state_key(job_id, page)).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TaskError::permanent("corrupt_state", e.to_string())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(transient(e)),
        }
    }

    async fn write_state(&self, job_id: &str, state: &PageState) -> Result<(), TaskError> {
        let body = serde_json::to_vec_pretty(state).map_err(transient)?;
        self.store
            .put(&state_key(job_id, state.page), Bytes::from(body))
            .await
            .map_err(transient)
    }

    /// Keeps the rows no earlier page of the job has, and claims them for this page.
    async fn claim_new(
        &self,
        job_id: &str,
        page: u32,
        rows: Vec<CatalogueRow>,
        room: u64,
    ) -> Result<(Vec<CatalogueRow>, u64), TaskError> {
        let lookups: Vec<_> = rows
            .iter()
            .map(|row| {
                let store = self.store.clone();
                let key = seen_key(job_id, &row.track_id);
                async move {
                    match store.get(&key).await {
                        Ok(bytes) => Ok(std::str::from_utf8(&bytes)
                            .ok()
                            .and_then(|s| s.trim().parse::<u32>().ok())),
                        Err(e) if e.is_not_found() => Ok(None),
                        Err(e) => Err(transient(e)),
                    }
                }
            })
            .collect();
        let owners: Vec<Result<Option<u32>, TaskError>> =
            futures::stream::iter(lookups).buffered(16).collect().await;
        let mut kept = Vec::new();
        let mut duplicates = 0;
        for (row, owner) in rows.into_iter().zip(owners) {
            match owner? {
                Some(other) if other != page => duplicates += 1,
                _ if (kept.len() as u64) < room => kept.push(row),
                _ => {}
            }
        }
        let marker = Bytes::from(page.to_string());
        let puts: Vec<_> = kept
            .iter()
            .map(|row| {
                let store = self.store.clone();
                let key = seen_key(job_id, &row.track_id);
                let marker = marker.clone();
                async move { store.put(&key, marker).await.map_err(transient) }
            })
            .collect();
        let writes: Vec<Result<(), TaskError>> =
            futures::stream::iter(puts).buffered(16).collect().await;
        writes.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok((kept, duplicates))
    }

    async fn record_failure(
        &self,
        job_id: &str,
        unit_id: &str,
        kind: &str,
        reason: &str,
    ) -> Result<(), TaskError> {
        let record = FailureRecord::new(job_id, Stage::Crawl, unit_id, kind, reason);
        write_failure(self.store.as_ref(), &record)
            .await
            .map_err(transient)
    }

    async fn publish_follow_ups(
        &self,
        task: &CrawlPageTask,
        state: &PageState,
        job: &JobContext,
    ) -> Result<(), TaskError> {
        let page = task.page_number;
        if state.tracks_on_page > 0 {
            let transcode = TranscodeBatchTask {
                job_id: task.job_id.clone(),
                batch_id: batch_id(page),
                catalogue_key: keys::catalogue_page(&task.job_id, page),
                track_ids: Vec::new(),
                frontend: job.spec.frontend.clone(),
            };
            self.queue
                .publish(names::TRANSCODE, Bytes::from(transcode.encode_to_vec()))
                .await
                .map_err(transient)?;
        }
        if let Some(next) = &state.next {
            let crawl = CrawlPageTask {
                job_id: task.job_id.clone(),
                url: next.url.clone(),
                page_number: page + 1,
                crawl_spec_key: task.crawl_spec_key.clone(),
            };
            self.queue
                .publish(names::CRAWL, Bytes::from(crawl.encode_to_vec()))
                .await
                .map_err(transient)?;
        }
        Ok(())
    }

    async fn crawl(&self, task: CrawlPageTask) -> Result<UnitReport, TaskError> {
        let job_id = task.job_id.as_str();
        let page = task.page_number;
        if page == 0 {
            return Err(TaskError::permanent(
                "invalid_task",
                "page numbers start at 1",
            ));
        }
        if let Some(done) = self.read_state(job_id, page).await? {
            if done.published {
                tracing::info!(job_id, unit_id = %page_unit(page), "page already crawled; not publishing again");
                return Ok(report(&done, 0));
            }
        }
        let job = self.job(&task).await?;
        let (chain, tracks_before) = if page == 1 {
            (0, 0)
        } else {
            let previous = self.read_state(job_id, page - 1).await?.ok_or_else(|| {
                TaskError::Transient(format!("state of page {} is not written yet", page - 1))
            })?;
            let chain = previous.next.as_ref().map_or(previous.chain, |n| n.chain);
            (chain, previous.tracks_through)
        };
        let url = Url::parse(&task.url)
            .map_err(|e| TaskError::permanent("invalid_url", format!("{}: {e}", task.url)))?;
        let limits = &job.spec.limits;
        let next_chain = |chain: usize| {
            (chain + 1 < job.spec.start_urls.len()).then(|| NextPage {
                url: job.spec.start_urls[chain + 1].clone(),
                chain: chain + 1,
            })
        };
        let within_page_limit = limits.max_pages.is_none_or(|max| page < max);

        let (rows, next, page_error) = match fetch_page(&job.fetcher, &job.profile, &url).await {
            Ok((final_url, parsed)) => {
                for failure in release_failures(page, &final_url, &parsed) {
                    tracing::warn!(job_id, unit_id = %failure.unit_id, reason = %failure.reason, "release skipped");
                    self.record_failure(job_id, &failure.unit_id, &failure.kind, &failure.reason)
                        .await?;
                }
                let next = match parsed.next_page.clone() {
                    Some(next_url) if next_url != url && next_url != final_url => Some(NextPage {
                        url: next_url.to_string(),
                        chain,
                    }),
                    _ => next_chain(chain),
                };
                let (filtered, _) = keep_rows(
                    parsed.rows,
                    &crate::spec::Limits {
                        genres: limits.genres.clone(),
                        ..Default::default()
                    },
                    &mut Default::default(),
                );
                (filtered, next, None)
            }
            Err(error) if error.is_transient() => {
                return Err(TaskError::Transient(error.to_string()))
            }
            Err(error) => (Vec::new(), next_chain(chain), Some(error)),
        };

        let room = limits
            .max_tracks
            .map_or(u64::MAX, |max| max.saturating_sub(tracks_before));
        let (kept, duplicates) = self.claim_new(job_id, page, rows, room).await?;
        let tracks_through = tracks_before + kept.len() as u64;
        let batch =
            catalogue::to_batch(&kept).map_err(|e| TaskError::permanent("arrow", e.to_string()))?;
        parquet_io::write_batches(
            self.store.as_ref(),
            &keys::catalogue_page(job_id, page),
            &[batch],
        )
        .await
        .map_err(transient)?;

        let track_limit_reached = limits.max_tracks.is_some_and(|max| tracks_through >= max);
        let next = next.filter(|_| within_page_limit && !track_limit_reached);
        let mut state = PageState {
            page,
            chain,
            url: task.url.clone(),
            tracks_on_page: kept.len() as u64,
            tracks_through,
            spawned_units: spawned(page, kept.len() as u64, next.is_some()),
            next,
            published: false,
        };
        self.write_state(job_id, &state).await?;
        self.publish_follow_ups(&task, &state, &job).await?;
        state.published = true;
        self.write_state(job_id, &state).await?;
        tracing::info!(job_id, unit_id = %page_unit(page), tracks = kept.len(), duplicates, "catalogue page written");

        match page_error {
            // The page itself failed for good: record why. The crawl still goes on
            // to the next start URL, if there is one.
            Some(error) if state.spawned_units.is_empty() => {
                Err(TaskError::permanent(error.kind(), error.to_string()))
            }
            Some(error) => {
                self.record_failure(job_id, &page_unit(page), error.kind(), &error.to_string())
                    .await?;
                Ok(report(&state, duplicates))
            }
            None => Ok(report(&state, duplicates)),
        }
    }
}

fn spawned(page: u32, tracks: u64, has_next: bool) -> Vec<String> {
    let mut units = Vec::new();
    if tracks > 0 {
        units.push(format!("transcode:{}", batch_id(page)));
    }
    if has_next {
        units.push(format!("crawl:{}", page_unit(page + 1)));
    }
    units
}

fn report(state: &PageState, duplicates: u64) -> UnitReport {
    UnitReport {
        spawned_units: state.spawned_units.clone(),
        detail_json: serde_json::json!({
            "tracks": state.tracks_on_page,
            "tracks_through": state.tracks_through,
            "duplicates": duplicates,
            "url": state.url,
        })
        .to_string(),
    }
}

impl TaskHandler for CrawlHandler {
    type Task = CrawlPageTask;
    const STAGE: Stage = Stage::Crawl;

    fn queue(&self) -> &str {
        names::CRAWL
    }

    fn unit(task: &CrawlPageTask) -> UnitRef {
        UnitRef {
            job_id: task.job_id.clone(),
            unit_id: page_unit(task.page_number),
        }
    }

    async fn handle(&self, task: CrawlPageTask) -> Result<UnitReport, TaskError> {
        self.crawl(task).await
    }
}
