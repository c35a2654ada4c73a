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

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use deepcuts_core::proto::{EmbedTask, IndexBlockTask, Stage, StageEvent, TrainTask};
use deepcuts_core::queue::{names, Delivery, QueueError, QueueHandle};
use deepcuts_core::storage::{Store, StoreError};
use deepcuts_core::{keys, now_unix_ms};
use prost::Message;
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
}

/// Key of the marker a user writes to cancel a job (`deepcuts job cancel`).
pub fn cancel_key(job_id: &str) -> String {
    format!("{}cancel", keys::job_root(job_id))
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
    if spec.job_id.is_empty() || keys::sanitise_unit_id(&spec.job_id) != spec.job_id {
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

/// Asks the coordinator to cancel a job; it takes effect on the job's next event.
pub async fn request_cancel(store: &Store, job_id: &str) -> Result<(), CoordinatorError> {
    if load_job(store, job_id).await?.is_none() {
        return Err(CoordinatorError::NoSuchJob(job_id.to_owned()));
    }
    store
        .put(&cancel_key(job_id), Bytes::from_static(b"cancel"))
        .await?;
    Ok(())
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
                let train_config_key = match &job.spec.model.train_config {
                    Some(config) => {
                        let key = train_config_key(job.job_id());
                        let data = serde_json::to_vec(config).expect("json value serialises");
                        store.put(&key, Bytes::from(data)).await?;
                        key
                    }
                    None => String::new(),
                };
                let task = TrainTask {
                    job_id: job.job_id().to_owned(),
                    model_id: job.model_id.clone(),
                    architecture: job.spec.model.architecture.clone(),
                    objective: job.spec.model.objective.clone(),
                    data_job_ids: vec![job.job_id().to_owned()],
                    train_config_key,
                };
                publish(queue, names::TRAIN, &task).await?;
                info!(job_id = job.job_id(), model_id = %job.model_id, "training issued");
                job.issue(Stage::Train, [job.model_id.clone()], now);
            }
            Action::Embed => {
                let batches: Vec<String> = store
                    .list(&keys::spectrograms_prefix(job.job_id()))
                    .await?
                    .into_iter()
                    .filter(|k| k.ends_with(".parquet"))
                    .collect();
                if batches.is_empty() {
                    job.fail("the transcoder wrote no spectrograms", now);
                    continue;
                }
                let mut units = Vec::with_capacity(batches.len());
                for (part, key) in batches.iter().enumerate() {
                    let task = EmbedTask {
                        job_id: job.job_id().to_owned(),
                        model_id: job.model_id.clone(),
                        spectrogram_key: key.clone(),
                        part: part as u32,
                    };
                    publish(queue, names::EMBED, &task).await?;
                    units.push(format!("model={}/part={:05}", job.model_id, part));
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
                    let task = IndexBlockTask {
                        job_id: job.job_id().to_owned(),
                        model_id: job.model_id.clone(),
                        block,
                        block_count: blocks,
                        k: job.spec.index.k,
                    };
                    publish(queue, names::INDEX, &task).await?;
                    units.push(format!("{}/block={block:05}", job.model_id));
                }
                info!(job_id = job.job_id(), blocks, "indexing issued");
                job.issue(Stage::Index, units, now);
            }
        }
    }
}

/// Events taken together before the touched jobs are saved and the events acked.
const EVENT_BATCH: usize = 256;

/// Folds stage events into job state until `shutdown`.
pub struct Coordinator {
    store: Store,
    queue: QueueHandle,
    jobs: HashMap<String, JobState>,
}

impl Coordinator {
    pub fn new(store: Store, queue: QueueHandle) -> Self {
        Self {
            store,
            queue,
            jobs: HashMap::new(),
        }
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

    /// Runs until `shutdown` is cancelled or the queue closes.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), CoordinatorError> {
        let active = self.reconcile().await?;
        info!(active, "coordinator started");
        let mut consumer = self
            .queue
            .consume(names::EVENTS, EVENT_BATCH as u16)
            .await?;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
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
