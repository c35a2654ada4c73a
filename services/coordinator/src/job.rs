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
}
