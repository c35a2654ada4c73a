//! A job's spec and state, and how stage events move the state on.
//!
//! Everything here is pure: [`JobState::apply_event`] folds one event into
//! the ledgers, and [`JobState::next_action`] says what the stage machine
//! wants done next. The driver ([`crate::driver`]) does the I/O. Events are
//! folded idempotently (sets keyed by unit id), so a redelivered event, or
//! one replayed after a coordinator restart, changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use deepcuts_core::proto::{Outcome, Stage, StageEvent};
use deepcuts_scraper::CrawlSpec;
use serde::{Deserialize, Serialize};

/// The unit id of a job's first crawl page (the scraper's `page_unit(1)`).
pub const FIRST_CRAWL_UNIT: &str = "page=00001";

/// What a user submits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub job_id: String,
    pub crawl: CrawlSpec,
    #[serde(default)]
    pub model: ModelChoice,
    #[serde(default)]
    pub index: IndexChoice,
}

/// Which model the job trains, or which trained model it reuses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelChoice {
    /// `default` or `seed`.
    pub architecture: String,
    /// `genre` or `contrastive`.
    pub objective: String,
    /// Skip training and embed with this existing model.
    pub reuse_model_id: Option<String>,
    /// Names the trained model; defaults to `<job>-<architecture>-<objective>`.
    pub model_id: Option<String>,
    /// Trainer hyper-parameters (any subset of the trainer's config), passed
    /// through as JSON; the trainer rejects unknown keys.
    pub train_config: Option<serde_json::Value>,
}

impl Default for ModelChoice {
    fn default() -> Self {
        Self {
            architecture: "default".into(),
            objective: "genre".into(),
            reuse_model_id: None,
            model_id: None,
            train_config: None,
        }
    }
}

/// How the neighbour table is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexChoice {
    pub k: u32,
    /// Row blocks (index tasks); 0 picks one block per `rows_per_block` tracks.
    pub blocks: u32,
    pub rows_per_block: u32,
}

impl Default for IndexChoice {
    fn default() -> Self {
        Self {
            k: 10,
            blocks: 0,
            rows_per_block: 25_000,
        }
    }
}

impl IndexChoice {
    pub fn block_count(&self, tracks: u64) -> u32 {
        if self.blocks > 0 {
            return self.blocks;
        }
        let per = u64::from(self.rows_per_block.max(1));
        tracks.div_ceil(per).clamp(1, 4096) as u32
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Crawling,
    Transcoding,
    Training,
    Embedding,
    Indexing,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Crawling => "crawling",
            JobStatus::Transcoding => "transcoding",
            JobStatus::Training => "training",
            JobStatus::Embedding => "embedding",
            JobStatus::Indexing => "indexing",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// The units one stage issued and how each ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageLedger {
    pub issued: BTreeSet<String>,
    pub done: BTreeSet<String>,
    /// Unit → reason.
    pub failed: BTreeMap<String, String>,
    /// Unit → the worker's detail JSON of its last DONE event.
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
    pub started_at_unix_ms: Option<u64>,
    pub finished_at_unix_ms: Option<u64>,
}

impl StageLedger {
    /// Every issued unit is done or failed (and at least one was issued).
    pub fn is_complete(&self) -> bool {
        !self.issued.is_empty()
            && self
                .issued
                .iter()
                .all(|u| self.done.contains(u) || self.failed.contains_key(u))
    }

    pub fn pending(&self) -> usize {
        self.issued
            .iter()
            .filter(|u| !self.done.contains(*u) && !self.failed.contains_key(*u))
            .count()
    }

    pub fn done_count(&self) -> usize {
        self.issued
            .iter()
            .filter(|u| self.done.contains(*u))
            .count()
    }

    pub fn failed_count(&self) -> usize {
        self.issued
            .iter()
            .filter(|u| !self.done.contains(*u) && self.failed.contains_key(*u))
            .count()
    }

    fn issue(&mut self, unit: &str, now_ms: u64) {
        self.issued.insert(unit.to_owned());
        self.started_at_unix_ms.get_or_insert(now_ms);
    }

    /// Sum of a numeric field over the done units' details.
    pub fn detail_sum(&self, field: &str) -> u64 {
        self.details
            .values()
            .filter_map(|d| d.get(field).and_then(|v| v.as_u64()))
            .sum()
    }
}

/// The stages in pipeline order, with the ledger name used in `job.json`.
pub const STAGES: [Stage; 5] = [
    Stage::Crawl,
    Stage::Transcode,
    Stage::Train,
    Stage::Embed,
    Stage::Index,
];

/// `jobs/<job>/job.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub spec: JobSpec,
    pub status: JobStatus,
    /// The model whose embeddings and table the job builds.
    pub model_id: String,
    /// Ledgers by stage key name ("crawl", "transcode", ...).
    pub stages: BTreeMap<String, StageLedger>,
    /// Why the job failed.
    pub error: Option<String>,
    /// The trainer's last progress event (epoch metrics).
    pub training_progress: Option<serde_json::Value>,
    pub submitted_at_unix_ms: u64,
    pub updated_at_unix_ms: u64,
    pub finished_at_unix_ms: Option<u64>,
}

/// What the driver must do to move a job on.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing until more events arrive.
    Wait,
    StartCrawl,
    Train,
    /// Embed every spectrogram batch the job has.
    Embed,
    /// Issue this many index blocks.
    Index {
        blocks: u32,
    },
}

impl JobState {
    pub fn new(spec: JobSpec, now_ms: u64) -> Self {
        let model_id = spec.model.reuse_model_id.clone().unwrap_or_else(|| {
            spec.model.model_id.clone().unwrap_or_else(|| {
                format!(
                    "{}-{}-{}",
                    spec.job_id, spec.model.architecture, spec.model.objective
                )
            })
        });
        let stages = STAGES
            .iter()
            .map(|s| (s.key_name().to_owned(), StageLedger::default()))
            .collect();
        Self {
            spec,
            status: JobStatus::Crawling,
            model_id,
            stages,
            error: None,
            training_progress: None,
            submitted_at_unix_ms: now_ms,
            updated_at_unix_ms: now_ms,
            finished_at_unix_ms: None,
        }
    }

    pub fn job_id(&self) -> &str {
        &self.spec.job_id
    }

    pub fn ledger(&self, stage: Stage) -> &StageLedger {
        static EMPTY: std::sync::OnceLock<StageLedger> = std::sync::OnceLock::new();
        self.stages
            .get(stage.key_name())
            .unwrap_or_else(|| EMPTY.get_or_init(StageLedger::default))
    }

    pub fn ledger_mut(&mut self, stage: Stage) -> &mut StageLedger {
        self.stages.entry(stage.key_name().to_owned()).or_default()
    }

    /// Records that the driver issued `units` of `stage`.
    pub fn issue(&mut self, stage: Stage, units: impl IntoIterator<Item = String>, now_ms: u64) {
        let ledger = self.ledger_mut(stage);
        for unit in units {
            ledger.issue(&unit, now_ms);
        }
        self.updated_at_unix_ms = now_ms;
    }

    /// Folds one event in. Returns whether anything changed.
    pub fn apply_event(&mut self, event: &StageEvent) -> bool {
        if self.status.is_terminal() {
            return false;
        }
        let Ok(stage) = Stage::try_from(event.stage) else {
            return false;
        };
        let now = event.at_unix_ms;
        let before = self.clone();
        let outcome = Outcome::try_from(event.outcome).unwrap_or(Outcome::Unspecified);
        // Units a worker spawned (the scraper's next page and its transcode batch).
        for spawned in &event.spawned_units {
            if let Some((name, unit)) = spawned.split_once(':') {
                if let Some(s) = STAGES.iter().find(|s| s.key_name() == name) {
                    self.ledger_mut(*s).issue(unit, now);
                }
            }
        }
        let ledger = self.ledger_mut(stage);
        match outcome {
            Outcome::Done => {
                ledger.failed.remove(&event.unit_id);
                ledger.done.insert(event.unit_id.clone());
                if let Ok(detail) = serde_json::from_str(&event.detail_json) {
                    ledger.details.insert(event.unit_id.clone(), detail);
                }
            }
            Outcome::Failed => {
                if !ledger.done.contains(&event.unit_id) {
                    ledger
                        .failed
                        .insert(event.unit_id.clone(), event.error.clone());
                }
            }
            Outcome::Progress => {
                if stage == Stage::Train {
                    self.training_progress = serde_json::from_str(&event.detail_json).ok();
                }
            }
            Outcome::Unspecified => {}
        }
        let changed = *self != before;
        if changed {
            self.updated_at_unix_ms = self.updated_at_unix_ms.max(now);
        }
        changed
    }

    fn finish_stage(&mut self, stage: Stage, now_ms: u64) {
        let ledger = self.ledger_mut(stage);
        ledger.finished_at_unix_ms.get_or_insert(now_ms);
    }

    pub fn fail(&mut self, reason: impl Into<String>, now_ms: u64) {
        self.status = JobStatus::Failed;
        self.error = Some(reason.into());
        self.finished_at_unix_ms = Some(now_ms);
        self.updated_at_unix_ms = now_ms;
    }

    /// Moves the status past every stage that is complete and says what to
    /// issue next. Issuing is the driver's; it records what it issued with
    /// [`JobState::issue`], after which this returns `Wait` for that stage.
    pub fn next_action(&mut self, now_ms: u64) -> Action {
        loop {
            match self.status {
                JobStatus::Crawling => {
                    let crawl = self.ledger(Stage::Crawl);
                    if crawl.issued.is_empty() {
                        return Action::StartCrawl;
                    }
                    if !crawl.is_complete() {
                        return Action::Wait;
                    }
                    self.finish_stage(Stage::Crawl, now_ms);
                    self.status = JobStatus::Transcoding;
                }
                JobStatus::Transcoding => {
                    let transcode = self.ledger(Stage::Transcode);
                    if transcode.issued.is_empty() {
                        let crawl = self.ledger(Stage::Crawl);
                        let reason = match crawl.failed.iter().next() {
                            Some((unit, why)) => {
                                format!("the crawl found no tracks ({unit}: {why})")
                            }
                            None => "the crawl found no tracks".to_owned(),
                        };
                        self.fail(reason, now_ms);
                        return Action::Wait;
                    }
                    if !transcode.is_complete() {
                        return Action::Wait;
                    }
                    if transcode.done_count() == 0 {
                        self.fail("every transcode batch failed", now_ms);
                        return Action::Wait;
                    }
                    self.finish_stage(Stage::Transcode, now_ms);
                    self.status = JobStatus::Training;
                }
                JobStatus::Training => {
                    if self.spec.model.reuse_model_id.is_some() {
                        self.status = JobStatus::Embedding;
                        continue;
                    }
                    let train = self.ledger(Stage::Train);
                    if train.issued.is_empty() {
                        return Action::Train;
                    }
                    if !train.is_complete() {
                        return Action::Wait;
                    }
                    if let Some(why) = train.failed.get(&self.model_id) {
                        let reason = format!("training {} failed: {why}", self.model_id);
                        self.fail(reason, now_ms);
                        return Action::Wait;
                    }
                    self.finish_stage(Stage::Train, now_ms);
                    self.status = JobStatus::Embedding;
                }
                JobStatus::Embedding => {
                    let embed = self.ledger(Stage::Embed);
                    if embed.issued.is_empty() {
                        return Action::Embed;
                    }
                    if !embed.is_complete() {
                        return Action::Wait;
                    }
                    if embed.done_count() == 0 {
                        self.fail("every embed part failed", now_ms);
                        return Action::Wait;
                    }
                    self.finish_stage(Stage::Embed, now_ms);
                    self.status = JobStatus::Indexing;
                }
                JobStatus::Indexing => {
                    let index = self.ledger(Stage::Index);
                    if index.issued.is_empty() {
                        let tracks = self.ledger(Stage::Embed).detail_sum("tracks");
                        return Action::Index {
                            blocks: self.spec.index.block_count(tracks),
                        };
                    }
                    if !index.is_complete() {
                        return Action::Wait;
                    }
                    if let Some((unit, why)) = index.failed.iter().next() {
                        let reason = format!("index block {unit} failed: {why}");
                        self.fail(reason, now_ms);
                        return Action::Wait;
                    }
                    self.finish_stage(Stage::Index, now_ms);
                    self.status = JobStatus::Done;
                    self.finished_at_unix_ms = Some(now_ms);
                    self.updated_at_unix_ms = now_ms;
                }
                JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled => return Action::Wait,
            }
        }
    }
}

/// The job status that runs `stage`.
pub fn status_of(stage: Stage) -> JobStatus {
    match stage {
        Stage::Crawl | Stage::Unspecified => JobStatus::Crawling,
        Stage::Transcode => JobStatus::Transcoding,
        Stage::Train => JobStatus::Training,
        Stage::Embed => JobStatus::Embedding,
        Stage::Index => JobStatus::Indexing,
    }
}

/// What `deepcuts job retry-failed` would issue again, before the driver
/// checks that each unit's task can be rebuilt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryPlan {
    /// Failed units to issue again, in pipeline order.
    pub units: Vec<(Stage, String)>,
    /// Failed units left alone, with why.
    pub skipped: Vec<(Stage, String, String)>,
}

impl JobState {
    /// The failed units a retry issues again. `Err` (with why) for a job that
    /// cannot be retried: a cancelled one, or a done one (its table was built
    /// from what succeeded, and later stages would not be rebuilt).
    ///
    /// A stage's failed units are retried only while no later stage that
    /// reads the stage's whole output has started: training and embedding
    /// read every spectrogram batch (so crawl pages and transcode batches are
    /// retried only before either is issued), embedding reads the model, and
    /// indexing reads every embeddings part. A result that arrived after its
    /// reader started would never be used, so those failures are skipped.
    /// Crawl pages spawn their own transcode batches, so retrying both at
    /// once is sound.
    pub fn retry_plan(&self) -> Result<RetryPlan, String> {
        match self.status {
            JobStatus::Cancelled => return Err("the job was cancelled".to_owned()),
            JobStatus::Done => {
                return Err("the job is done; resubmit it to rebuild its results".to_owned())
            }
            _ => {}
        }
        let mut plan = RetryPlan::default();
        for (i, stage) in STAGES.iter().enumerate() {
            let ledger = self.ledger(*stage);
            let failed: Vec<&String> = ledger
                .failed
                .keys()
                .filter(|u| !ledger.done.contains(*u))
                .collect();
            if failed.is_empty() {
                continue;
            }
            // The first reader of crawl output is training, not transcoding.
            let reader_started = STAGES
                .iter()
                .skip(i.max(1) + 1)
                .find(|s| !self.ledger(**s).issued.is_empty());
            for unit in failed {
                match reader_started {
                    Some(reader) => plan.skipped.push((
                        *stage,
                        unit.clone(),
                        format!(
                            "{} has started; a new result would not be used",
                            reader.key_name()
                        ),
                    )),
                    None => plan.units.push((*stage, unit.clone())),
                }
            }
        }
        Ok(plan)
    }

    /// The status a job takes once `units` are issued again: the earliest
    /// stage among them, or where it is if that is earlier.
    pub fn resume_status(&self, units: &[(Stage, String)]) -> JobStatus {
        let earliest = units.iter().map(|(s, _)| status_of(*s)).min();
        match (earliest, self.status) {
            (None, status) => status,
            (Some(earliest), JobStatus::Failed) => earliest,
            (Some(earliest), status) => earliest.min(status),
        }
    }

    /// Records that `units` were issued again: each leaves `failed` (so it
    /// counts as pending), the job goes back to the earliest of their stages
    /// (clearing a failure), and those stages' end times are cleared so they
    /// are timed again. Idempotent: a unit no longer failed changes nothing.
    pub fn apply_retry(&mut self, units: &[(Stage, String)], now_ms: u64) -> bool {
        let units: Vec<(Stage, String)> = units
            .iter()
            .filter(|(s, u)| {
                let ledger = self.ledger(*s);
                ledger.failed.contains_key(u) && !ledger.done.contains(u)
            })
            .cloned()
            .collect();
        if units.is_empty() {
            return false;
        }
        let resume = self.resume_status(&units);
        for (stage, unit) in &units {
            self.ledger_mut(*stage).failed.remove(unit);
        }
        for stage in STAGES {
            if status_of(stage) >= resume {
                self.ledger_mut(stage).finished_at_unix_ms = None;
            }
        }
        self.status = resume;
        self.error = None;
        self.finished_at_unix_ms = None;
        self.updated_at_unix_ms = now_ms;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            job_id: "j1".into(),
            crawl: CrawlSpec::new("http://127.0.0.1:1/"),
            model: ModelChoice::default(),
            index: IndexChoice::default(),
        }
    }

    fn event(stage: Stage, unit: &str, outcome: Outcome, spawned: &[&str]) -> StageEvent {
        StageEvent {
            job_id: "j1".into(),
            stage: stage as i32,
            unit_id: unit.into(),
            outcome: outcome as i32,
            error: if outcome == Outcome::Failed {
                "boom".into()
            } else {
                String::new()
            },
            at_unix_ms: 10,
            spawned_units: spawned.iter().map(|s| s.to_string()).collect(),
            detail_json: r#"{"tracks": 7}"#.into(),
        }
    }

    #[test]
    fn stages_advance_only_when_every_unit_settles() {
        let mut job = JobState::new(spec(), 0);
        assert_eq!(job.next_action(1), Action::StartCrawl);
        job.issue(Stage::Crawl, [FIRST_CRAWL_UNIT.to_owned()], 1);
        assert_eq!(job.next_action(1), Action::Wait);
        // Page 1 spawns its batch and page 2; the batch finishes first.
        job.apply_event(&event(Stage::Transcode, "page-00001", Outcome::Done, &[]));
        job.apply_event(&event(
            Stage::Crawl,
            "page=00001",
            Outcome::Done,
            &["transcode:page-00001", "crawl:page=00002"],
        ));
        assert_eq!(job.next_action(2), Action::Wait);
        assert_eq!(job.status, JobStatus::Crawling);
        // Page 2 fails for good: the crawl is still complete.
        job.apply_event(&event(Stage::Crawl, "page=00002", Outcome::Failed, &[]));
        assert_eq!(job.next_action(3), Action::Train);
        assert_eq!(job.status, JobStatus::Training);
        assert_eq!(job.ledger(Stage::Crawl).failed_count(), 1);
        job.issue(Stage::Train, [job.model_id.clone()], 3);
        assert_eq!(job.next_action(3), Action::Wait);
        let model = job.model_id.clone();
        job.apply_event(&event(Stage::Train, &model, Outcome::Done, &[]));
        assert_eq!(job.next_action(4), Action::Embed);
        job.issue(Stage::Embed, ["model=m/part=00000".to_owned()], 4);
        job.apply_event(&event(
            Stage::Embed,
            "model=m/part=00000",
            Outcome::Done,
            &[],
        ));
        assert_eq!(job.next_action(5), Action::Index { blocks: 1 });
        job.issue(Stage::Index, ["m/block=00000".to_owned()], 5);
        assert_eq!(job.next_action(5), Action::Wait);
        job.apply_event(&event(Stage::Index, "m/block=00000", Outcome::Done, &[]));
        assert_eq!(job.next_action(6), Action::Wait);
        assert_eq!(job.status, JobStatus::Done);
        assert_eq!(job.finished_at_unix_ms, Some(6));
    }

    #[test]
    fn replayed_events_change_nothing() {
        let mut job = JobState::new(spec(), 0);
        job.issue(Stage::Crawl, [FIRST_CRAWL_UNIT.to_owned()], 1);
        let e = event(
            Stage::Crawl,
            "page=00001",
            Outcome::Done,
            &["transcode:page-00001"],
        );
        assert!(job.apply_event(&e));
        assert!(!job.apply_event(&e));
        // A late failure of a unit that is already done does not undo it.
        assert!(!job.apply_event(&event(Stage::Crawl, "page=00001", Outcome::Failed, &[])));
        assert_eq!(job.ledger(Stage::Crawl).done_count(), 1);
    }

    #[test]
    fn a_failed_training_fails_the_job_and_terminal_jobs_ignore_events() {
        let mut job = JobState::new(spec(), 0);
        job.issue(Stage::Crawl, [FIRST_CRAWL_UNIT.to_owned()], 1);
        job.apply_event(&event(
            Stage::Crawl,
            "page=00001",
            Outcome::Done,
            &["transcode:page-00001"],
        ));
        job.apply_event(&event(Stage::Transcode, "page-00001", Outcome::Done, &[]));
        assert_eq!(job.next_action(2), Action::Train);
        job.issue(Stage::Train, [job.model_id.clone()], 2);
        let model = job.model_id.clone();
        job.apply_event(&event(Stage::Train, &model, Outcome::Failed, &[]));
        assert_eq!(job.next_action(3), Action::Wait);
        assert_eq!(job.status, JobStatus::Failed);
        assert!(job.error.as_deref().unwrap().contains("boom"));
        assert!(!job.apply_event(&event(Stage::Embed, "x", Outcome::Done, &[])));
    }

    #[test]
    fn an_empty_crawl_fails_with_the_pages_reason() {
        let mut job = JobState::new(spec(), 0);
        job.issue(Stage::Crawl, [FIRST_CRAWL_UNIT.to_owned()], 1);
        job.apply_event(&event(Stage::Crawl, "page=00001", Outcome::Failed, &[]));
        job.next_action(2);
        assert_eq!(job.status, JobStatus::Failed);
        assert!(job.error.as_deref().unwrap().contains("page=00001: boom"));
    }

    #[test]
    fn reusing_a_model_skips_training_and_blocks_scale_with_tracks() {
        let mut s = spec();
        s.model.reuse_model_id = Some("old".into());
        let mut job = JobState::new(s, 0);
        assert_eq!(job.model_id, "old");
        job.issue(Stage::Crawl, [FIRST_CRAWL_UNIT.to_owned()], 1);
        job.apply_event(&event(
            Stage::Crawl,
            "page=00001",
            Outcome::Done,
            &["transcode:page-00001"],
        ));
        job.apply_event(&event(Stage::Transcode, "page-00001", Outcome::Done, &[]));
        assert_eq!(job.next_action(2), Action::Embed);
        let index = IndexChoice::default();
        assert_eq!(index.block_count(0), 1);
        assert_eq!(index.block_count(25_000), 1);
        assert_eq!(index.block_count(400_000), 16);
    }

    /// Page 1 done (its batch and page 2 spawned), page 2 and the batch failed:
    /// the job failed in transcoding.
    fn failed_in_transcoding() -> JobState {
        let mut job = JobState::new(spec(), 0);
        job.issue(Stage::Crawl, [FIRST_CRAWL_UNIT.to_owned()], 1);
        job.apply_event(&event(
            Stage::Crawl,
            "page=00001",
            Outcome::Done,
            &["transcode:page-00001", "crawl:page=00002"],
        ));
        job.apply_event(&event(Stage::Crawl, "page=00002", Outcome::Failed, &[]));
        job.apply_event(&event(Stage::Transcode, "page-00001", Outcome::Failed, &[]));
        job.next_action(2);
        job
    }

    #[test]
    fn a_retry_reopens_a_failed_job_at_its_earliest_retried_stage() {
        let mut job = failed_in_transcoding();
        assert_eq!(job.status, JobStatus::Failed);
        assert!(job.ledger(Stage::Crawl).finished_at_unix_ms.is_some());
        let plan = job.retry_plan().unwrap();
        assert_eq!(
            plan.units,
            vec![
                (Stage::Crawl, "page=00002".to_owned()),
                (Stage::Transcode, "page-00001".to_owned()),
            ]
        );
        assert!(plan.skipped.is_empty());
        assert_eq!(job.resume_status(&plan.units), JobStatus::Crawling);
        assert!(job.apply_retry(&plan.units, 5));
        assert_eq!(job.status, JobStatus::Crawling);
        assert_eq!(job.error, None);
        assert_eq!(job.finished_at_unix_ms, None);
        assert_eq!(job.ledger(Stage::Crawl).finished_at_unix_ms, None);
        assert_eq!(job.ledger(Stage::Crawl).pending(), 1);
        assert_eq!(job.ledger(Stage::Transcode).pending(), 1);
        assert_eq!(job.ledger(Stage::Transcode).failed_count(), 0);
        // Applying the same retry again (a replayed request) changes nothing.
        let again = job.clone();
        assert!(!job.apply_retry(&plan.units, 6));
        assert_eq!(job, again);
        assert_eq!(job.next_action(6), Action::Wait);
        // The retried units succeed: the job moves on by itself.
        job.apply_event(&event(
            Stage::Crawl,
            "page=00002",
            Outcome::Done,
            &["transcode:page-00002"],
        ));
        assert_eq!(job.next_action(7), Action::Wait);
        assert_eq!(job.status, JobStatus::Transcoding);
        job.apply_event(&event(Stage::Transcode, "page-00001", Outcome::Done, &[]));
        job.apply_event(&event(Stage::Transcode, "page-00002", Outcome::Done, &[]));
        assert_eq!(job.next_action(8), Action::Train);
    }

    #[test]
    fn failures_whose_readers_started_are_skipped() {
        let mut job = JobState::new(spec(), 0);
        job.issue(Stage::Crawl, [FIRST_CRAWL_UNIT.to_owned()], 1);
        job.apply_event(&event(
            Stage::Crawl,
            "page=00001",
            Outcome::Done,
            &["transcode:page-00001", "transcode:page-00002"],
        ));
        job.apply_event(&event(Stage::Transcode, "page-00001", Outcome::Done, &[]));
        job.apply_event(&event(Stage::Transcode, "page-00002", Outcome::Failed, &[]));
        assert_eq!(job.next_action(2), Action::Train);
        job.issue(Stage::Train, [job.model_id.clone()], 2);
        let model = job.model_id.clone();
        job.apply_event(&event(Stage::Train, &model, Outcome::Done, &[]));
        assert_eq!(job.next_action(3), Action::Embed);
        let parts = ["model=m/part=00000", "model=m/part=00001"];
        job.issue(Stage::Embed, parts.map(str::to_owned), 3);
        job.apply_event(&event(Stage::Embed, parts[0], Outcome::Failed, &[]));
        assert_eq!(job.next_action(4), Action::Wait);
        assert_eq!(job.status, JobStatus::Embedding);

        let plan = job.retry_plan().unwrap();
        assert_eq!(plan.units, vec![(Stage::Embed, parts[0].to_owned())]);
        assert_eq!(plan.skipped.len(), 1);
        let (stage, unit, why) = &plan.skipped[0];
        assert_eq!((*stage, unit.as_str()), (Stage::Transcode, "page-00002"));
        assert!(why.contains("train"), "{why}");
        assert!(job.apply_retry(&plan.units, 5));
        assert_eq!(job.status, JobStatus::Embedding);
        assert_eq!(job.ledger(Stage::Embed).pending(), 2);
        // Earlier stages keep their end times; only the reopened one is cleared.
        assert!(job.ledger(Stage::Train).finished_at_unix_ms.is_some());
        assert_eq!(job.ledger(Stage::Transcode).failed_count(), 1);
    }

    #[test]
    fn cancelled_and_done_jobs_are_not_retried() {
        let mut job = failed_in_transcoding();
        job.status = JobStatus::Cancelled;
        assert!(job.retry_plan().unwrap_err().contains("cancelled"));
        job.status = JobStatus::Done;
        assert!(job.retry_plan().unwrap_err().contains("done"));
    }
}
