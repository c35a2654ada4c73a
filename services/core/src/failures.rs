//! Failure records: what a unit leaves behind when it fails for good, so the
//! rest of the job goes on and nothing is lost silently.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::proto::Stage;
use crate::storage::{ObjectStore, StoreError};

/// One failed unit. Stored as JSON at [`keys::failure`]; a retry that fails
/// again overwrites the same key, so a unit has at most one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub job_id: String,
    /// Stage key name ("crawl", "transcode", ...).
    pub stage: String,
    pub unit_id: String,
    /// A short machine-readable kind ("http_404", "decode", "malformed_page", ...).
    pub kind: String,
    /// What went wrong, for a person.
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl FailureRecord {
    pub fn new(
        job_id: &str,
        stage: Stage,
        unit_id: &str,
        kind: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            job_id: job_id.to_owned(),
            stage: stage.key_name().to_owned(),
            unit_id: unit_id.to_owned(),
            kind: kind.into(),
            reason: reason.into(),
            at_unix_ms: crate::now_unix_ms(),
        }
    }

    pub fn key(&self) -> String {
        format!(
            "{}{}.json",
            keys::failures_prefix(&self.job_id, stage_from_name(&self.stage)),
            keys::sanitise_unit_id(&self.unit_id)
        )
    }
}

fn stage_from_name(name: &str) -> Option<Stage> {
    Stage::from_str_name(&format!("STAGE_{}", name.to_ascii_uppercase()))
}

/// Writes (or overwrites) the record of one failed unit.
pub async fn write_failure(
    store: &dyn ObjectStore,
    record: &FailureRecord,
) -> Result<(), StoreError> {
    let body = serde_json::to_vec_pretty(record).expect("failure records always serialise");
    store.put(&record.key(), Bytes::from(body)).await
}

/// Reads every failure record of a job (optionally of one stage), in key order.
pub async fn list_failures(
    store: &dyn ObjectStore,
    job_id: &str,
    stage: Option<Stage>,
) -> Result<Vec<FailureRecord>, StoreError> {
    let mut records = Vec::new();
    for key in store.list(&keys::failures_prefix(job_id, stage)).await? {
        let body = store.get(&key).await?;
        match serde_json::from_slice::<FailureRecord>(&body) {
            Ok(record) => records.push(record),
            Err(err) => tracing::warn!(%key, error = %err, "unreadable failure record"),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    #[tokio::test]
    async fn a_second_failure_of_a_unit_overwrites_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let first = FailureRecord::new("j", Stage::Transcode, "t1", "decode", "bad frame");
        let second = FailureRecord::new("j", Stage::Transcode, "t1", "decode", "no audio");
        write_failure(&store, &first).await.unwrap();
        write_failure(&store, &second).await.unwrap();
        write_failure(
            &store,
            &FailureRecord::new("j", Stage::Crawl, "page-2", "http_404", "gone"),
        )
        .await
        .unwrap();
        let transcode = list_failures(&store, "j", Some(Stage::Transcode))
            .await
            .unwrap();
        assert_eq!(transcode.len(), 1);
        assert_eq!(transcode[0].reason, "no audio");
        assert_eq!(list_failures(&store, "j", None).await.unwrap().len(), 2);
        assert_eq!(
            first.key(),
            keys::failure("j", Stage::Transcode, "t1"),
            "record key and keys::failure agree"
        );
    }
}
