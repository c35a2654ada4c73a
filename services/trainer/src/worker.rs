//! The train worker: consumes `deepcuts.train` through the core worker loop.
//!
//! ## Runs that outlast RabbitMQ's consumer timeout
//!
//! Training takes hours; RabbitMQ closes a channel whose oldest unacked
//! delivery is older than `consumer_timeout` (30 minutes by default) and
//! returns the message to the queue. The worker holds its delivery for the
//! whole run (so a crashed worker's task comes back by itself), which needs
//! the broker to allow it:
//!
//! - **Broker setting (required).** RabbitMQ 3.10 (Debian's) has no per-queue
//!   `x-consumer-timeout` (that arrived in 3.12), so the timeout is raised
//!   broker-wide in `rabbitmq.conf`: `consumer_timeout = 86400000` (24 h, in
//!   ms). Every other worker acks within seconds, so only training uses the
//!   headroom. On 3.12+ the same can be scoped to the train queue with a
//!   policy (`consumer-timeout`) instead.
//! - **Prefetch 1.** A prefetched second task would wait unacked behind a
//!   training run and time out too, so the binary forces `prefetch` to equal
//!   `concurrency` (1 by default).
//!
//! ## Duplicates are safe
//!
//! Delivery is at-least-once: the same [`TrainTask`] can arrive twice (a
//! redelivery after a consumer timeout, a crash between the model write and
//! the ack, or a coordinator retry), possibly while the first copy still runs.
//! - A task whose model card exists is done: the worker reports it again and
//!   trains nothing.
//! - Otherwise the worker takes a **lease** (`models/<id>/claim.json`: owner and
//!   renewal time) before training and renews it every `lease_renew_s`. A
//!   worker that finds a live lease held by another owner does not train: it
//!   watches until the model card appears (then reports done) or the lease
//!   goes stale (its owner died: it takes over and resumes from the last
//!   checkpoint). A trainer that finds on renewal that its lease was taken
//!   stops at once, without writing, and becomes a watcher.
//! - Object stores offer no compare-and-swap, so a claim is written, left to
//!   settle for `claim_settle_ms`, and read back; the last writer wins and the
//!   other backs off. Were two trainers ever to overlap anyway, CPU training is
//!   deterministic for a seed, so both write identical checkpoints.
//!
//! ## Shutdown and progress
//!
//! On SIGTERM the run stops after its current step, writes a checkpoint at that
//! step, releases its lease and returns the task to the queue; the next worker
//! resumes there. Every finished epoch publishes a `Progress` stage event with
//! the epoch's metrics as JSON.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deepcuts_core::keys;
use deepcuts_core::proto::{Outcome, Stage, TrainTask};
use deepcuts_core::queue::{names, QueueHandle};
use deepcuts_core::storage::Store;
use deepcuts_core::worker::{publish_event, TaskError, TaskHandler, UnitRef, UnitReport};
use deepcuts_model::network::{Architecture, Objective};
use deepcuts_model::store::BlockingStore;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::artifact;
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::metrics::EpochMetrics;
use crate::train::{train, Observer, TrainOutcome, TrainRequest};

/// The worker's own settings (`[settings]` in the service config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerSettings {
    /// A lease not renewed for this long belongs to a dead worker.
    pub lease_ttl_s: u64,
    /// How often a training worker renews its lease.
    pub lease_renew_s: u64,
    /// How often a watching worker looks for the model card or a stale lease.
    pub watch_poll_s: u64,
    /// Wait between writing a claim and reading it back.
    pub claim_settle_ms: u64,
    /// Hyper-parameters of tasks that name no config (and the base that a
    /// task's `train_config_key` overrides).
    pub defaults: TrainConfig,
}

impl Default for TrainerSettings {
    fn default() -> Self {
        Self {
            lease_ttl_s: 600,
            lease_renew_s: 60,
            watch_poll_s: 30,
            claim_settle_ms: 2000,
            defaults: TrainConfig::default(),
        }
    }
}

/// The lease a training worker holds on a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub renewed_at_unix_ms: u64,
}

impl Lease {
    fn is_live(&self, ttl: Duration, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.renewed_at_unix_ms) < ttl.as_millis() as u64
    }
}

/// Who owns the run after a claim attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Ours,
    HeldBy(String),
}

async fn read_lease(store: &Store, model_id: &str) -> Result<Option<Lease>, TaskError> {
    match store.get(&artifact::claim_key(model_id)).await {
        // An unreadable claim (a torn write on a store without atomic puts) is no claim.
        Ok(data) => Ok(serde_json::from_slice(&data).ok()),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(TaskError::Transient(err.to_string())),
    }
}

async fn write_lease(store: &Store, model_id: &str, owner: &str) -> Result<(), TaskError> {
    let lease = Lease {
        owner: owner.to_owned(),
        renewed_at_unix_ms: deepcuts_core::now_unix_ms(),
    };
    let data = serde_json::to_vec(&lease).map_err(|e| TaskError::Transient(e.to_string()))?;
    store
        .put(&artifact::claim_key(model_id), Bytes::from(data))
        .await
        .map_err(|e| TaskError::Transient(e.to_string()))
}

/// Takes the lease unless another owner holds a live one.
pub async fn try_claim(
    store: &Store,
    model_id: &str,
    owner: &str,
    ttl: Duration,
    settle: Duration,
) -> Result<Claim, TaskError> {
    if let Some(lease) = read_lease(store, model_id).await? {
        if lease.owner != owner && lease.is_live(ttl, deepcuts_core::now_unix_ms()) {
            return Ok(Claim::HeldBy(lease.owner));
        }
    }
    write_lease(store, model_id, owner).await?;
    tokio::time::sleep(settle).await;
    match read_lease(store, model_id).await? {
        Some(lease) if lease.owner == owner => Ok(Claim::Ours),
        Some(lease) => Ok(Claim::HeldBy(lease.owner)),
        None => Ok(Claim::HeldBy("unknown".to_owned())),
    }
}

/// Gives the lease up so a redelivery can start at once (only if still ours).
async fn release(store: &Store, model_id: &str, owner: &str) {
    match read_lease(store, model_id).await {
        Ok(Some(lease)) if lease.owner == owner => {
            if let Err(err) = store.delete(&artifact::claim_key(model_id)).await {
                warn!(model_id, error = %err, "lease not released; it will expire");
            }
        }
        _ => {}
    }
}

/// Turns a task into a training request: names checked, config layered.
pub async fn request_for(
    store: &Store,
    task: &TrainTask,
    defaults: &TrainConfig,
) -> Result<TrainRequest, TaskError> {
    let config_error = |e: TrainError| TaskError::permanent("config", e.to_string());
    if task.model_id.trim().is_empty() || keys::sanitise_unit_id(&task.model_id) != task.model_id {
        return Err(TaskError::permanent(
            "config",
            format!(
                "model id {:?} must be non-empty and use only letters, digits, - _ . =",
                task.model_id
            ),
        ));
    }
    let architecture =
        Architecture::parse(&task.architecture).map_err(|e| config_error(TrainError::Model(e)))?;
    let objective =
        Objective::parse(&task.objective).map_err(|e| config_error(TrainError::Model(e)))?;
    let config = if task.train_config_key.is_empty() {
        defaults.clone()
    } else {
        let data = store
            .get(&task.train_config_key)
            .await
            .map_err(|err| match err {
                e if e.is_not_found() => {
                    TaskError::permanent("config", format!("{} not found", task.train_config_key))
                }
                e => TaskError::Transient(e.to_string()),
            })?;
        defaults.overlay_json(&data).map_err(|e| {
            TaskError::permanent("config", format!("{}: {e}", task.train_config_key))
        })?
    };
    let data_job_ids = if task.data_job_ids.is_empty() {
        vec![task.job_id.clone()]
    } else {
        task.data_job_ids.clone()
    };
    Ok(TrainRequest {
        job_id: task.job_id.clone(),
        model_id: task.model_id.clone(),
        architecture,
        objective,
        data_job_ids,
        config,
    })
}

/// How a training error settles the delivery.
pub fn task_error(err: TrainError) -> TaskError {
    if err.is_transient() {
        return TaskError::Transient(err.to_string());
    }
    let kind = match &err {
        TrainError::Config(_) | TrainError::Model(deepcuts_model::ModelError::Config(_)) => {
            "config"
        }
        TrainError::NoData(_) => "no_data",
        TrainError::BadInput { .. }
        | TrainError::Model(deepcuts_model::ModelError::BadInput { .. }) => "bad_input",
        TrainError::Store(_) | TrainError::Parquet(_) => "missing_input",
        _ => "train",
    };
    TaskError::permanent(kind, err.to_string())
}

/// Publishes progress and keeps the lease alive while training runs.
struct WorkerObserver {
    handle: Handle,
    queue: QueueHandle,
    store: Store,
    unit: UnitRef,
    owner: String,
    renew_every: Duration,
    last_renewal: Instant,
    cancel: Arc<AtomicBool>,
    lost_lease: Arc<AtomicBool>,
}

impl WorkerObserver {
    fn renew(&mut self) {
        self.last_renewal = Instant::now();
        let model_id = self.unit.unit_id.clone();
        let result = self.handle.block_on(async {
            match read_lease(&self.store, &model_id).await? {
                Some(lease) if lease.owner != self.owner => Ok(Some(lease.owner)),
                _ => write_lease(&self.store, &model_id, &self.owner)
                    .await
                    .map(|_| None),
            }
        });
        match result {
            Ok(None) => {}
            Ok(Some(other)) => {
                warn!(job_id = %self.unit.job_id, unit_id = %self.unit.unit_id, other_owner = %other, "lease taken over by another worker; stopping without writing");
                self.lost_lease.store(true, Ordering::SeqCst);
                self.cancel.store(true, Ordering::SeqCst);
            }
            // A store hiccup: keep training, the next renewal tries again.
            Err(err) => {
                warn!(job_id = %self.unit.job_id, unit_id = %self.unit.unit_id, error = %err, "lease renewal failed")
            }
        }
    }
}

impl Observer for WorkerObserver {
    fn on_step(&mut self, _epoch: u32, _step: u64, _loss: f64) {
        if self.last_renewal.elapsed() >= self.renew_every {
            self.renew();
        }
    }

    fn on_epoch(&mut self, metrics: &EpochMetrics) {
        let report = UnitReport {
            spawned_units: Vec::new(),
            detail_json: serde_json::to_string(metrics).unwrap_or_default(),
        };
        let published = self.handle.block_on(publish_event(
            &self.queue,
            &self.unit,
            Stage::Train,
            Outcome::Progress,
            "",
            &report,
        ));
        if let Err(err) = published {
            warn!(job_id = %self.unit.job_id, unit_id = %self.unit.unit_id, epoch = metrics.epoch, error = %err, "progress event not published");
        }
    }

    fn on_checkpoint(&mut self, _key: &str) {
        // A checkpoint is proof of life: renew with it when due.
        if self.last_renewal.elapsed() >= self.renew_every / 2 {
            self.renew();
        }
    }

    fn checkpoint_on_cancel(&self) -> bool {
        !self.lost_lease.load(Ordering::SeqCst)
    }
}

/// Consumes train tasks; see the module docs for the delivery contract.
pub struct TrainHandler {
    store: Store,
    queue: QueueHandle,
    settings: TrainerSettings,
    shutdown: CancellationToken,
    /// This process's identity in leases.
    worker_id: String,
}

impl std::fmt::Debug for TrainHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainHandler")
            .field("worker_id", &self.worker_id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a finished (or already finished) run reports to the coordinator.
fn done_report(outcome: &TrainOutcome) -> UnitReport {
    let detail = serde_json::json!({
        "model_id": outcome.card.model_id,
        "already_done": outcome.already_done,
        "resumed_from": outcome.resumed_from,
        "epochs": outcome.report.epochs.len(),
        "best_epoch": outcome.report.best_epoch,
        "holdout": outcome.report.holdout.summary(),
    });
    UnitReport {
        spawned_units: Vec::new(),
        detail_json: detail.to_string(),
    }
}

impl TrainHandler {
    pub fn new(
        store: Store,
        queue: QueueHandle,
        settings: TrainerSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let worker_id = format!(
            "trainer-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        Self {
            store,
            queue,
            settings,
            shutdown,
            worker_id,
        }
    }

    /// Trains while holding the lease. `Ok(None)`: the lease was lost.
    async fn train_with_lease(
        &self,
        request: &TrainRequest,
        unit: &UnitRef,
        owner: &str,
    ) -> Result<Option<TrainOutcome>, TaskError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let lost_lease = Arc::new(AtomicBool::new(false));
        let handle = Handle::current();
        let mut observer = WorkerObserver {
            handle: handle.clone(),
            queue: self.queue.clone(),
            store: self.store.clone(),
            unit: unit.clone(),
            owner: owner.to_owned(),
            renew_every: Duration::from_secs(self.settings.lease_renew_s.max(1)),
            last_renewal: Instant::now(),
            cancel: cancel.clone(),
            lost_lease: lost_lease.clone(),
        };
        let stop_on_shutdown = {
            let cancel = cancel.clone();
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                cancel.store(true, Ordering::SeqCst);
            })
        };
        let blocking_store = BlockingStore::new(self.store.clone(), handle);
        let run = request.clone();
        let flag = cancel.clone();
        let result =
            tokio::task::spawn_blocking(move || train(&blocking_store, &run, &mut observer, &flag))
                .await;
        stop_on_shutdown.abort();
        match result {
            Ok(Ok(outcome)) => Ok(Some(outcome)),
            Ok(Err(TrainError::Cancelled)) if lost_lease.load(Ordering::SeqCst) => Ok(None),
            Ok(Err(TrainError::Cancelled)) => Err(TaskError::Transient(
                "training stopped for shutdown; resumes from its checkpoint".to_owned(),
            )),
            Ok(Err(err)) => Err(task_error(err)),
            Err(join) => Err(TaskError::Transient(format!(
                "training thread failed: {join}"
            ))),
        }
    }

    /// Waits for the model card or a stale lease. `Ok(true)`: the card exists.
    async fn watch(&self, model_id: &str, unit: &UnitRef, owner: &str) -> Result<bool, TaskError> {
        info!(job_id = %unit.job_id, unit_id = %unit.unit_id, other_owner = owner, "another worker is training this model; watching");
        let poll = Duration::from_secs(self.settings.watch_poll_s.max(1));
        let ttl = Duration::from_secs(self.settings.lease_ttl_s.max(1));
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    return Err(TaskError::Transient("shutdown while watching another trainer".to_owned()));
                }
                _ = tokio::time::sleep(poll) => {}
            }
            if self.model_complete(model_id).await? {
                return Ok(true);
            }
            match read_lease(&self.store, model_id).await? {
                Some(lease) if lease.is_live(ttl, deepcuts_core::now_unix_ms()) => {}
                _ => return Ok(false),
            }
        }
    }

    async fn model_complete(&self, model_id: &str) -> Result<bool, TaskError> {
        self.store
            .exists(&artifact::card_key(model_id))
            .await
            .map_err(|e| TaskError::Transient(e.to_string()))
    }
}

impl TaskHandler for TrainHandler {
    type Task = TrainTask;
    const STAGE: Stage = Stage::Train;

    fn queue(&self) -> &str {
        names::TRAIN
    }

    fn unit(task: &Self::Task) -> UnitRef {
        UnitRef {
            job_id: task.job_id.clone(),
            unit_id: task.model_id.clone(),
        }
    }

    async fn handle(&self, task: Self::Task) -> Result<UnitReport, TaskError> {
        let unit = Self::unit(&task);
        let request = request_for(&self.store, &task, &self.settings.defaults).await?;
        let ttl = Duration::from_secs(self.settings.lease_ttl_s.max(1));
        let settle = Duration::from_millis(self.settings.claim_settle_ms);
        // One owner id per delivery, so a duplicate inside this process is a stranger too.
        let owner = format!("{}-{:08x}", self.worker_id, rand::random::<u32>());
        loop {
            // A finished model needs no lease: train() reports it without work.
            let claim = if self.model_complete(&request.model_id).await? {
                Claim::Ours
            } else {
                try_claim(&self.store, &request.model_id, &owner, ttl, settle).await?
            };
            match claim {
                Claim::Ours => {
                    let outcome = self.train_with_lease(&request, &unit, &owner).await;
                    if !matches!(outcome, Ok(None)) {
                        release(&self.store, &request.model_id, &owner).await;
                    }
                    match outcome? {
                        Some(outcome) => {
                            info!(job_id = %unit.job_id, unit_id = %unit.unit_id, already_done = outcome.already_done, resumed_from = ?outcome.resumed_from, "model trained");
                            return Ok(done_report(&outcome));
                        }
                        None => continue, // lost the lease: watch the new owner
                    }
                }
                Claim::HeldBy(other) => {
                    // Either way, loop: a complete model is reported by train(),
                    // a stale lease is claimed again.
                    self.watch(&request.model_id, &unit, &other).await?;
                }
            }
        }
    }
}
