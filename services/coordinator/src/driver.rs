//! The coordinator's I/O: submitting jobs, folding stage events from
//! `deepcuts.events` into `jobs/<job>/job.json`, and issuing each stage's tasks
//! when the stage before it is complete.
//!
//! Events are taken in small batches; each touched job is advanced and saved
//! once per batch, and only then are the batch's events acked. A coordinator
//! killed at any point therefore loses nothing: unacked events come back, and
//! folding them again is idempotent. A task issued twice (a crash between the
//! publish and the save) is harmless, because every task's output key is
//! deterministic.
//!
//! Between events the coordinator polls [`REQUESTS_PREFIX`] for cancel and
//! retry requests, so that `job.json` keeps one writer: commands write a
//! request, the coordinator applies it to the state it holds.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use deepcuts_core::proto::{
    CrawlPageTask, EmbedTask, IndexBlockTask, Stage, StageEvent, TrainTask, TranscodeBatchTask,
};
use deepcuts_core::queue::{names, Delivery, QueueError, QueueHandle};
use deepcuts_core::storage::{Store, StoreError};
use deepcuts_core::{keys, now_unix_ms};
use deepcuts_scraper::crawl::page_unit;
use deepcuts_scraper::worker::{batch_id, state_key, PageState};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::job::{Action, JobSpec, JobState, JobStatus, FIRST_CRAWL_UNIT};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("job {job_id}: {reason}")]
    Invalid { job_id: String, reason: String },
    #[error("job {0} already exists")]
    Exists(String),
    #[error("no job {0}")]
    NoSuchJob(String),
    #[error("job {job_id}: job.json is unreadable: {source}")]
    BadState {
        job_id: String,
        source: serde_json::Error,
    },
    #[error("job {job_id} cannot be retried: {reason}")]
    NotRetryable { job_id: String, reason: String },
}

/// Key of the marker a user writes to cancel a job (`deepcuts job cancel`).
pub fn cancel_key(job_id: &str) -> String {
    format!("{}cancel", keys::job_root(job_id))
}

/// Prefix of the requests the coordinator polls for between events:
/// `<kind>/<job>`, one object per job and kind. They sit under one prefix,
/// not beside each job, so one listing per poll finds them all, including
/// those for jobs the coordinator does not hold (failed ones, or ones that
/// have sent no event yet).
pub const REQUESTS_PREFIX: &str = "coordinator/requests/";

/// Key of the request to retry a job's failed units (`deepcuts job retry-failed`).
pub fn retry_key(job_id: &str) -> String {
    format!("{REQUESTS_PREFIX}retry_failed/{job_id}")
}

/// Key of the request that makes the coordinator apply a job's cancel marker
/// ([`cancel_key`]) without waiting for the job's next event.
pub fn cancel_request_key(job_id: &str) -> String {
    format!("{REQUESTS_PREFIX}cancel/{job_id}")
}

/// Key of the trainer config a job passes to its train task.
pub fn train_config_key(job_id: &str) -> String {
    format!("{}train_config.json", keys::job_root(job_id))
}

pub async fn load_job(store: &Store, job_id: &str) -> Result<Option<JobState>, CoordinatorError> {
    match store.get(&keys::job_state(job_id)).await {
        Ok(data) => {
            serde_json::from_slice(&data)
                .map(Some)
                .map_err(|source| CoordinatorError::BadState {
                    job_id: job_id.to_owned(),
                    source,
                })
        }
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err.into()),
    }
}

pub async fn save_job(store: &Store, job: &JobState) -> Result<(), CoordinatorError> {
    let data = serde_json::to_vec_pretty(job).expect("job state serialises");
    store
        .put(&keys::job_state(job.job_id()), Bytes::from(data))
        .await?;
    Ok(())
}

/// Every job in the store, newest submission first.
pub async fn list_jobs(store: &Store) -> Result<Vec<JobState>, CoordinatorError> {
    let mut jobs = Vec::new();
    for key in store.list("jobs/").await? {
        let Some(job_id) = key
            .strip_prefix("jobs/")
            .and_then(|rest| rest.strip_suffix("/job.json"))
        else {
            continue;
        };
        if job_id.contains('/') {
            continue;
        }
        if let Some(job) = load_job(store, job_id).await? {
            jobs.push(job);
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.submitted_at_unix_ms));
    Ok(jobs)
}

/// Whether `id` can name a job: one key segment of letters, digits, - _ . =
/// (and not `.` or `..`, which the store refuses as a segment).
pub fn is_job_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && keys::sanitise_unit_id(id) == id
}

/// Checks a spec, records the job and publishes its first crawl page.
pub async fn submit(
    store: &Store,
    queue: &QueueHandle,
    spec: JobSpec,
) -> Result<JobState, CoordinatorError> {
    let invalid = |reason: String| CoordinatorError::Invalid {
        job_id: spec.job_id.clone(),
        reason,
    };
    if !is_job_id(&spec.job_id) {
        return Err(invalid(
            "a job id uses only letters, digits, - _ . =".to_owned(),
        ));
    }
    spec.crawl.validate().map_err(|e| invalid(e.to_string()))?;
    if load_job(store, &spec.job_id).await?.is_some() {
        return Err(CoordinatorError::Exists(spec.job_id));
    }
    let mut job = JobState::new(spec, now_unix_ms());
    advance(store, queue, &mut job).await?;
    save_job(store, &job).await?;
    Ok(job)
}

/// Asks the coordinator to cancel a job. The marker at [`cancel_key`] is
/// what counts (it is checked on every event and at start-up); the request
/// beside it gets it applied within a poll interval.
pub async fn request_cancel(store: &Store, job_id: &str) -> Result<(), CoordinatorError> {
    if load_job(store, job_id).await?.is_none() {
        return Err(CoordinatorError::NoSuchJob(job_id.to_owned()));
    }
    store
        .put(&cancel_key(job_id), Bytes::from_static(b"cancel"))
        .await?;
    store
        .put(&cancel_request_key(job_id), request_body())
        .await?;
    Ok(())
}

fn request_body() -> Bytes {
    Bytes::from(serde_json::json!({"requested_at_unix_ms": now_unix_ms()}).to_string())
}

async fn publish<M: Message>(
    queue: &QueueHandle,
    name: &str,
    message: &M,
) -> Result<(), CoordinatorError> {
    queue
        .publish(name, Bytes::from(message.encode_to_vec()))
        .await?;
    Ok(())
}

/// The spectrogram batches an embed stage reads, in key order; a batch's
/// position is its embed part number.
async fn spectrogram_batches(store: &Store, job_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(store
        .list(&keys::spectrograms_prefix(job_id))
        .await?
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect())
}

async fn write_train_config(store: &Store, job: &JobState) -> Result<(), StoreError> {
    if let Some(config) = &job.spec.model.train_config {
        let data = serde_json::to_vec(config).expect("json value serialises");
        store
            .put(&train_config_key(job.job_id()), Bytes::from(data))
            .await?;
    }
    Ok(())
}

fn train_task(job: &JobState) -> TrainTask {
    TrainTask {
        job_id: job.job_id().to_owned(),
        model_id: job.model_id.clone(),
        architecture: job.spec.model.architecture.clone(),
        objective: job.spec.model.objective.clone(),
        data_job_ids: vec![job.job_id().to_owned()],
        train_config_key: match job.spec.model.train_config {
            Some(_) => train_config_key(job.job_id()),
            None => String::new(),
        },
    }
}

/// The embedder's unit id of a part.
fn embed_unit(model_id: &str, part: u32) -> String {
    format!("model={model_id}/part={part:05}")
}

fn embed_task(job: &JobState, spectrogram_key: &str, part: u32) -> EmbedTask {
    EmbedTask {
        job_id: job.job_id().to_owned(),
        model_id: job.model_id.clone(),
        spectrogram_key: spectrogram_key.to_owned(),
        part,
    }
}

/// The indexer's unit id of a block.
fn index_unit(model_id: &str, block: u32) -> String {
    format!("{model_id}/block={block:05}")
}

fn index_task(job: &JobState, block: u32, block_count: u32) -> IndexBlockTask {
    IndexBlockTask {
        job_id: job.job_id().to_owned(),
        model_id: job.model_id.clone(),
        block,
        block_count,
        k: job.spec.index.k,
    }
}

/// Issues whatever the job's stage machine asks for until it has to wait.
pub async fn advance(
    store: &Store,
    queue: &QueueHandle,
    job: &mut JobState,
) -> Result<(), CoordinatorError> {
    loop {
        let now = now_unix_ms();
        let before = job.status;
        match job.next_action(now) {
            Action::Wait => {
                if job.status != before {
                    info!(
                        job_id = job.job_id(),
                        status = job.status.as_str(),
                        "job moved on"
                    );
                }
                return Ok(());
            }
            Action::StartCrawl => {
                deepcuts_scraper::worker::start_crawl(store, queue, job.job_id(), &job.spec.crawl)
                    .await
                    .map_err(|e| CoordinatorError::Invalid {
                        job_id: job.job_id().to_owned(),
                        reason: format!("starting the crawl: {e:?}"),
                    })?;
                job.issue(Stage::Crawl, [FIRST_CRAWL_UNIT.to_owned()], now);
            }
            Action::Train => {
                write_train_config(store, job).await?;
                publish(queue, names::TRAIN, &train_task(job)).await?;
                info!(job_id = job.job_id(), model_id = %job.model_id, "training issued");
                job.issue(Stage::Train, [job.model_id.clone()], now);
            }
            Action::Embed => {
                let batches = spectrogram_batches(store, job.job_id()).await?;
                if batches.is_empty() {
                    job.fail("the transcoder wrote no spectrograms", now);
                    continue;
                }
                let mut units = Vec::with_capacity(batches.len());
                for (part, key) in batches.iter().enumerate() {
                    publish(queue, names::EMBED, &embed_task(job, key, part as u32)).await?;
                    units.push(embed_unit(&job.model_id, part as u32));
                }
                info!(
                    job_id = job.job_id(),
                    parts = units.len(),
                    "embedding issued"
                );
                job.issue(Stage::Embed, units, now);
            }
            Action::Index { blocks } => {
                let mut units = Vec::with_capacity(blocks as usize);
                for block in 0..blocks {
                    publish(queue, names::INDEX, &index_task(job, block, blocks)).await?;
                    units.push(index_unit(&job.model_id, block));
                }
                info!(job_id = job.job_id(), blocks, "indexing issued");
                job.issue(Stage::Index, units, now);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Retrying failed units (`deepcuts job retry-failed`, `POST /api/jobs/{id}/retry-failed`)
// ---------------------------------------------------------------------------

/// One unit a retry issues again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryUnit {
    pub stage: String,
    pub unit_id: String,
}

/// One failed unit a retry leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedUnit {
    pub stage: String,
    pub unit_id: String,
    pub reason: String,
}

/// What a retry issues again (or, from [`request_retry_failed`], will).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrySummary {
    pub job_id: String,
    /// The job's status before the retry.
    pub status: JobStatus,
    /// Its status once the units are issued again.
    pub resume_status: JobStatus,
    pub units: Vec<RetryUnit>,
    pub skipped: Vec<SkippedUnit>,
}

/// A failed unit's task, rebuilt.
struct Reissue {
    stage: Stage,
    unit_id: String,
    queue: &'static str,
    payload: Bytes,
    /// A scraper page state to remove first, so the page is fetched again.
    clear: Option<String>,
}

/// The unit's task, or why it cannot be rebuilt.
type Rebuilt = Result<Reissue, String>;

/// `n` of a unit id `<prefix><n>`, when formatting `n` gives the id back.
fn unit_number(unit: &str, prefix: &str, format: impl Fn(u32) -> String) -> Option<u32> {
    let n = unit.strip_prefix(prefix)?.parse().ok()?;
    (format(n) == unit).then_some(n)
}

async fn read_page_state(
    store: &Store,
    job_id: &str,
    page: u32,
) -> Result<Option<Result<PageState, String>>, StoreError> {
    match store.get(&state_key(job_id, page)).await {
        Ok(data) => Ok(Some(serde_json::from_slice(&data).map_err(|e| {
            format!("the crawl state of page {page} is unreadable: {e}")
        }))),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}

/// A crawl page's task: its URL is the first start URL (page 1) or the
/// `next` the previous page's state recorded, which is what the scraper
/// published. A page that failed for good after writing its state has it
/// marked `published` with nothing spawned; the scraper would report such a
/// page done again without fetching it, so that state is cleared first
/// (nothing was published from it, so fetching again cannot fork the crawl).
async fn rebuild_crawl(
    store: &Store,
    job: &JobState,
    unit: &str,
) -> Result<Rebuilt, CoordinatorError> {
    let job_id = job.job_id();
    let Some(page) = unit_number(unit, "page=", page_unit).filter(|p| *p > 0) else {
        return Ok(Err("not a crawl page unit".to_owned()));
    };
    let url = if page == 1 {
        job.spec.crawl.start_urls[0].clone()
    } else {
        match read_page_state(store, job_id, page - 1).await? {
            None => return Ok(Err(format!("page {} left no crawl state", page - 1))),
            Some(Err(why)) => return Ok(Err(why)),
            Some(Ok(previous)) => match previous.next {
                Some(next) => next.url,
                None => return Ok(Err(format!("page {} named no next page", page - 1))),
            },
        }
    };
    let clear = match read_page_state(store, job_id, page).await? {
        Some(Ok(own)) if own.published && own.spawned_units.is_empty() => {
            Some(state_key(job_id, page))
        }
        Some(Err(why)) => return Ok(Err(why)),
        _ => None,
    };
    let task = CrawlPageTask {
        job_id: job_id.to_owned(),
        url,
        page_number: page,
        crawl_spec_key: keys::crawl_spec(job_id),
    };
    Ok(Ok(Reissue {
        stage: Stage::Crawl,
        unit_id: unit.to_owned(),
        queue: names::CRAWL,
        payload: Bytes::from(task.encode_to_vec()),
        clear,
    }))
}

/// A transcode batch's task, as the scraper publishes it for its page.
async fn rebuild_transcode(
    store: &Store,
    job: &JobState,
    unit: &str,
) -> Result<Rebuilt, CoordinatorError> {
    let job_id = job.job_id();
    let Some(page) = unit_number(unit, "page-", batch_id).filter(|p| *p > 0) else {
        return Ok(Err("not a catalogue page's batch".to_owned()));
    };
    let catalogue_key = keys::catalogue_page(job_id, page);
    if !store.exists(&catalogue_key).await? {
        return Ok(Err(format!("catalogue page {page} is missing")));
    }
    let task = TranscodeBatchTask {
        job_id: job_id.to_owned(),
        batch_id: unit.to_owned(),
        catalogue_key,
        track_ids: Vec::new(),
        frontend: job.spec.crawl.frontend.clone(),
    };
    Ok(Ok(Reissue {
        stage: Stage::Transcode,
        unit_id: unit.to_owned(),
        queue: names::TRANSCODE,
        payload: Bytes::from(task.encode_to_vec()),
        clear: None,
    }))
}

fn reissue<M: Message>(stage: Stage, unit: &str, queue: &'static str, task: &M) -> Rebuilt {
    Ok(Reissue {
        stage,
        unit_id: unit.to_owned(),
        queue,
        payload: Bytes::from(task.encode_to_vec()),
        clear: None,
    })
}

/// Every failed unit a retry would issue again, with its task rebuilt, and
/// the ones it leaves alone.
async fn plan_retry(
    store: &Store,
    job: &JobState,
) -> Result<(Vec<Reissue>, Vec<SkippedUnit>), CoordinatorError> {
    let plan = job
        .retry_plan()
        .map_err(|reason| CoordinatorError::NotRetryable {
            job_id: job.job_id().to_owned(),
            reason,
        })?;
    let mut skipped: Vec<SkippedUnit> = plan
        .skipped
        .into_iter()
        .map(|(stage, unit_id, reason)| SkippedUnit {
            stage: stage.key_name().to_owned(),
            unit_id,
            reason,
        })
        .collect();
    let mut reissues = Vec::new();
    let mut spectrograms: Option<Vec<String>> = None;
    for (stage, unit) in plan.units {
        let rebuilt = match stage {
            Stage::Crawl => rebuild_crawl(store, job, &unit).await?,
            Stage::Transcode => rebuild_transcode(store, job, &unit).await?,
            Stage::Train if unit == job.model_id => {
                reissue(stage, &unit, names::TRAIN, &train_task(job))
            }
            Stage::Train => Err(format!("not this job's model ({})", job.model_id)),
            Stage::Embed => {
                let prefix = format!("model={}/part=", job.model_id);
                match unit_number(&unit, &prefix, |n| embed_unit(&job.model_id, n)) {
                    None => Err("not an embed part of this job's model".to_owned()),
                    Some(part) => {
                        if spectrograms.is_none() {
                            spectrograms = Some(spectrogram_batches(store, job.job_id()).await?);
                        }
                        let batches = spectrograms.as_deref().unwrap_or_default();
                        // Parts are numbered by position in this listing when
                        // embedding was issued; only an unchanged listing maps
                        // a part back to its batch.
                        if batches.len() != job.ledger(Stage::Embed).issued.len() {
                            Err(format!(
                                "the job now has {} spectrogram batches, but {} parts were issued",
                                batches.len(),
                                job.ledger(Stage::Embed).issued.len()
                            ))
                        } else {
                            match batches.get(part as usize) {
                                Some(key) => {
                                    reissue(stage, &unit, names::EMBED, &embed_task(job, key, part))
                                }
                                None => Err(format!("no spectrogram batch for part {part}")),
                            }
                        }
                    }
                }
            }
            Stage::Index => {
                let prefix = format!("{}/block=", job.model_id);
                let blocks = job.ledger(Stage::Index).issued.len() as u32;
                match unit_number(&unit, &prefix, |n| index_unit(&job.model_id, n))
                    .filter(|b| *b < blocks)
                {
                    Some(block) => {
                        reissue(stage, &unit, names::INDEX, &index_task(job, block, blocks))
                    }
                    None => Err("not an index block of this job's model".to_owned()),
                }
            }
            Stage::Unspecified => Err("unknown stage".to_owned()),
        };
        match rebuilt {
            Ok(reissue) => reissues.push(reissue),
            Err(reason) => skipped.push(SkippedUnit {
                stage: stage.key_name().to_owned(),
                unit_id: unit,
                reason,
            }),
        }
    }
    Ok((reissues, skipped))
}

fn summary(job: &JobState, reissues: &[Reissue], skipped: Vec<SkippedUnit>) -> RetrySummary {
    let units: Vec<(Stage, String)> = reissues
        .iter()
        .map(|r| (r.stage, r.unit_id.clone()))
        .collect();
    RetrySummary {
        job_id: job.job_id().to_owned(),
        status: job.status,
        resume_status: job.resume_status(&units),
        units: units
            .into_iter()
            .map(|(stage, unit_id)| RetryUnit {
                stage: stage.key_name().to_owned(),
                unit_id,
            })
            .collect(),
        skipped,
    }
}

/// Asks the coordinator to retry a job's failed units, and says which it
/// will issue again (see [`retry_failed`] for what a retry does).
///
/// The request is a marker at [`retry_key`], which the coordinator applies
/// within a poll interval. The coordinator is the only writer of `job.json`
/// and holds running jobs in memory, so a command that rewrote the state
/// itself would race with it and be overwritten; the marker keeps one writer.
/// Nothing is written when there is nothing to retry.
pub async fn request_retry_failed(
    store: &Store,
    job_id: &str,
) -> Result<RetrySummary, CoordinatorError> {
    let job = load_job(store, job_id)
        .await?
        .ok_or_else(|| CoordinatorError::NoSuchJob(job_id.to_owned()))?;
    let (reissues, skipped) = plan_retry(store, &job).await?;
    if !reissues.is_empty() {
        store.put(&retry_key(job_id), request_body()).await?;
    }
    Ok(summary(&job, &reissues, skipped))
}

/// Issues a job's failed units again; the coordinator calls this when it
/// finds a retry request, and saves the job afterwards.
///
/// For each stage ledger, the units that failed (in `failed`, not in
/// `done`) have their task published to the stage's queue again, their
/// failure record (`jobs/<job>/failures/<stage>/<unit>.json`) removed, and
/// leave `failed`, so they count as pending. The job goes back to the
/// earliest stage it retries (a failed job loses its `error` and end time),
/// and moves on when their events arrive, like any other stage.
///
/// Where the tasks come from: each is rebuilt from the job state and the
/// store, exactly as it was first built, so no task payload has to be kept.
/// Train, embed and index tasks are the coordinator's own (embed parts map
/// back to their batches through the sorted spectrogram listing, which no
/// longer changes once embedding is issued); transcode batches are the
/// scraper's one-per-page tasks (`page-<n>` reads catalogue page `n`, with
/// the spec's front-end); a crawl page's URL is the first start URL or the
/// `next` its predecessor's crawl state recorded. A unit whose task cannot
/// be rebuilt is reported as skipped.
///
/// Not retried: units of a stage whose reader has started (see
/// [`JobState::retry_plan`]); failures inside a unit that is done, such as
/// one track of a transcode batch or one release of a crawl page (the unit
/// succeeded, its record stays); and cancelled or done jobs (an error).
///
/// Delivery is at least once and so is this: failure records go before the
/// publishes (so a fast new failure is not deleted), the state changes only
/// after every publish, and a crash before the save repeats the publishes,
/// which is harmless because every task's output key is deterministic.
pub async fn retry_failed(
    store: &Store,
    queue: &QueueHandle,
    job: &mut JobState,
) -> Result<RetrySummary, CoordinatorError> {
    let (reissues, skipped) = plan_retry(store, job).await?;
    let result = summary(job, &reissues, skipped);
    for r in &reissues {
        if let Some(key) = &r.clear {
            store.delete(key).await?;
        }
        store
            .delete(&keys::failure(job.job_id(), r.stage, &r.unit_id))
            .await?;
    }
    if reissues.iter().any(|r| r.stage == Stage::Train) {
        write_train_config(store, job).await?;
    }
    for r in &reissues {
        queue.publish(r.queue, r.payload.clone()).await?;
    }
    let units: Vec<(Stage, String)> = reissues
        .iter()
        .map(|r| (r.stage, r.unit_id.clone()))
        .collect();
    job.apply_retry(&units, now_unix_ms());
    if !units.is_empty() {
        info!(
            job_id = job.job_id(),
            units = units.len(),
            status = job.status.as_str(),
            "failed units issued again"
        );
    }
    Ok(result)
}

/// Events taken together before the touched jobs are saved and the events acked.
const EVENT_BATCH: usize = 256;

/// How often the coordinator looks for retry requests and cancel markers
/// between events.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Folds stage events into job state until `shutdown`.
pub struct Coordinator {
    store: Store,
    queue: QueueHandle,
    jobs: HashMap<String, JobState>,
    poll_interval: Duration,
}

impl Coordinator {
    pub fn new(store: Store, queue: QueueHandle) -> Self {
        Self {
            store,
            queue,
            jobs: HashMap::new(),
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// Sets how often requests are polled (tests use a short one).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Picks up every unfinished job where its `job.json` left it, issuing
    /// any stage whose predecessor completed before a restart.
    pub async fn reconcile(&mut self) -> Result<usize, CoordinatorError> {
        let mut active = 0;
        for mut job in list_jobs(&self.store).await? {
            if job.status.is_terminal() {
                continue;
            }
            active += 1;
            self.check_cancel(&mut job).await?;
            advance(&self.store, &self.queue, &mut job).await?;
            save_job(&self.store, &job).await?;
            self.jobs.insert(job.job_id().to_owned(), job);
        }
        Ok(active)
    }

    async fn check_cancel(&self, job: &mut JobState) -> Result<(), CoordinatorError> {
        if !job.status.is_terminal() && self.store.exists(&cancel_key(job.job_id())).await? {
            let now = now_unix_ms();
            job.status = JobStatus::Cancelled;
            job.finished_at_unix_ms = Some(now);
            job.updated_at_unix_ms = now;
            info!(job_id = job.job_id(), "job cancelled");
        }
        Ok(())
    }

    async fn job(&mut self, job_id: &str) -> Result<Option<&mut JobState>, CoordinatorError> {
        if !self.jobs.contains_key(job_id) {
            match load_job(&self.store, job_id).await? {
                Some(job) => {
                    self.jobs.insert(job_id.to_owned(), job);
                }
                None => return Ok(None),
            }
        }
        Ok(self.jobs.get_mut(job_id))
    }

    /// Applies the requests that arrive outside the event stream (see
    /// [`REQUESTS_PREFIX`]): cancels and retries. Both must work for jobs
    /// that send no events: a failed job, or one whose workers are stuck.
    pub async fn poll_requests(&mut self) -> Result<(), CoordinatorError> {
        for key in self.store.list(REQUESTS_PREFIX).await? {
            let Some((kind, job_id)) = key
                .strip_prefix(REQUESTS_PREFIX)
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            let Some(request) = self.read_request(&key).await? else {
                continue;
            };
            match kind {
                "cancel" => self.apply_cancel_request(job_id).await?,
                "retry_failed" => self.apply_retry_request(job_id).await?,
                _ => warn!(%key, "unknown coordinator request; dropped"),
            }
            self.finish_request(&key, &request).await?;
        }
        Ok(())
    }

    async fn read_request(&self, key: &str) -> Result<Option<Bytes>, CoordinatorError> {
        match self.store.get(key).await {
            Ok(request) => Ok(Some(request)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Removes an applied request, unless it was written again meanwhile (the
    /// store has no compare-and-delete; this narrows the gap).
    async fn finish_request(&self, key: &str, applied: &Bytes) -> Result<(), CoordinatorError> {
        match self.read_request(key).await? {
            Some(now) if now == *applied => Ok(self.store.delete(key).await?),
            _ => Ok(()),
        }
    }

    /// The job as the coordinator holds it, or as stored. A copy: if applying
    /// a request fails, the held state stays as it was and the request is
    /// tried again at the next poll.
    async fn job_copy(&self, job_id: &str) -> Result<Option<JobState>, CoordinatorError> {
        match self.jobs.get(job_id) {
            Some(job) => Ok(Some(job.clone())),
            None => load_job(&self.store, job_id).await,
        }
    }

    async fn keep(&mut self, job: JobState) -> Result<(), CoordinatorError> {
        save_job(&self.store, &job).await?;
        if job.status.is_terminal() {
            self.jobs.remove(job.job_id());
        } else {
            self.jobs.insert(job.job_id().to_owned(), job);
        }
        Ok(())
    }

    async fn apply_cancel_request(&mut self, job_id: &str) -> Result<(), CoordinatorError> {
        match self.job_copy(job_id).await? {
            Some(mut job) if !job.status.is_terminal() => {
                self.check_cancel(&mut job).await?;
                self.keep(job).await
            }
            _ => Ok(()),
        }
    }

    async fn apply_retry_request(&mut self, job_id: &str) -> Result<(), CoordinatorError> {
        let Some(mut job) = self.job_copy(job_id).await? else {
            warn!(
                job_id,
                "retry requested for a job that does not exist; dropped"
            );
            return Ok(());
        };
        self.check_cancel(&mut job).await?;
        match retry_failed(&self.store, &self.queue, &mut job).await {
            Ok(_) => {}
            // Still saved below: the cancel check may have just ended the job.
            Err(CoordinatorError::NotRetryable { reason, .. }) => {
                warn!(job_id, %reason, "retry request dropped");
            }
            Err(err) => return Err(err),
        }
        advance(&self.store, &self.queue, &mut job).await?;
        self.keep(job).await
    }

    /// Runs until `shutdown` is cancelled or the queue closes.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), CoordinatorError> {
        let active = self.reconcile().await?;
        info!(active, "coordinator started");
        let mut consumer = self
            .queue
            .consume(names::EVENTS, EVENT_BATCH as u16)
            .await?;
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // `Consumer::next` is cancel-safe on both backends, so losing the
            // race to a poll tick drops no delivery.
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = poll.tick() => {
                    if let Err(err) = self.poll_requests().await {
                        warn!(error = %err, "polling requests failed; trying again at the next poll");
                    }
                    continue;
                }
                next = consumer.next() => next,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < EVENT_BATCH {
                match tokio::time::timeout(Duration::from_millis(20), consumer.next()).await {
                    Ok(Some(delivery)) => batch.push(delivery),
                    _ => break,
                }
            }
            self.fold_batch(batch).await?;
        }
        Ok(())
    }

    async fn fold_batch(&mut self, batch: Vec<Delivery>) -> Result<(), CoordinatorError> {
        let mut touched = BTreeSet::new();
        let mut undecodable = Vec::new();
        let mut settled = Vec::new();
        for delivery in batch {
            let event = match StageEvent::decode(delivery.payload.clone()) {
                Ok(event) => event,
                Err(err) => {
                    undecodable.push((delivery, err.to_string()));
                    continue;
                }
            };
            match self.job(&event.job_id).await? {
                Some(job) => {
                    job.apply_event(&event);
                    touched.insert(event.job_id.clone());
                }
                None => warn!(
                    job_id = %event.job_id,
                    unit_id = %event.unit_id,
                    "event for a job the coordinator does not know; dropped"
                ),
            }
            settled.push(delivery);
        }
        for job_id in &touched {
            let mut job = self.jobs.remove(job_id).expect("touched jobs are cached");
            self.check_cancel(&mut job).await?;
            advance(&self.store, &self.queue, &mut job).await?;
            save_job(&self.store, &job).await?;
            if !job.status.is_terminal() {
                self.jobs.insert(job_id.clone(), job);
            }
        }
        for delivery in settled {
            delivery.ack().await?;
        }
        for (delivery, reason) in undecodable {
            delivery
                .reject(&format!("undecodable stage event: {reason}"))
                .await?;
        }
        Ok(())
    }
}
