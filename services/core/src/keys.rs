//! The storage key of every artefact, in one place.
//!
//! Keys are deterministic functions of the unit of work, so a retried unit
//! overwrites its own output instead of adding a second copy. The layout is
//! documented in `docs/architecture.md`; change both together.

use crate::proto::Stage;

/// Root of everything a job writes.
pub fn job_root(job_id: &str) -> String {
    format!("jobs/{job_id}/")
}

/// The job's state document, owned by the coordinator.
pub fn job_state(job_id: &str) -> String {
    format!("jobs/{job_id}/job.json")
}

/// The crawl spec every crawl-page task of the job refers to.
pub fn crawl_spec(job_id: &str) -> String {
    format!("jobs/{job_id}/crawl_spec.json")
}

/// Prefix of the job's catalogue pages.
pub fn catalogue_prefix(job_id: &str) -> String {
    format!("jobs/{job_id}/catalogue/")
}

/// One listing page's tracks. Zero-padded so keys list in page order.
pub fn catalogue_page(job_id: &str, page: u32) -> String {
    format!("jobs/{job_id}/catalogue/page={page:05}.parquet")
}

/// Prefix of the job's spectrogram batches.
pub fn spectrograms_prefix(job_id: &str) -> String {
    format!("jobs/{job_id}/spectrograms/")
}

/// One transcode batch's windows.
pub fn spectrogram_batch(job_id: &str, batch_id: &str) -> String {
    format!("jobs/{job_id}/spectrograms/batch={batch_id}.parquet")
}

/// Prefix of the embeddings one model made for the job.
pub fn embeddings_prefix(job_id: &str, model_id: &str) -> String {
    format!("jobs/{job_id}/embeddings/model={model_id}/")
}

/// One embedded part (one spectrogram batch in, one part out).
pub fn embeddings_part(job_id: &str, model_id: &str, part: u32) -> String {
    format!("jobs/{job_id}/embeddings/model={model_id}/part={part:05}.parquet")
}

/// Prefix of the neighbour table one model made for the job.
pub fn neighbours_prefix(job_id: &str, model_id: &str) -> String {
    format!("jobs/{job_id}/neighbours/model={model_id}/")
}

/// One row block of the neighbour table.
pub fn neighbours_block(job_id: &str, model_id: &str, block: u32) -> String {
    format!("jobs/{job_id}/neighbours/model={model_id}/block={block:05}.parquet")
}

/// Prefix of the job's failure records, optionally of one stage.
pub fn failures_prefix(job_id: &str, stage: Option<Stage>) -> String {
    match stage {
        Some(stage) => format!("jobs/{job_id}/failures/{}/", stage.key_name()),
        None => format!("jobs/{job_id}/failures/"),
    }
}

/// The failure record of one unit. A unit that fails again overwrites it.
pub fn failure(job_id: &str, stage: Stage, unit_id: &str) -> String {
    format!(
        "jobs/{job_id}/failures/{}/{}.json",
        stage.key_name(),
        sanitise_unit_id(unit_id)
    )
}

/// Everything one model owns: weights, card, report, checkpoints.
pub fn model_dir(model_id: &str) -> String {
    format!("models/{model_id}/")
}

/// Unit ids can be URLs or track ids; keep them to one safe key segment.
pub fn sanitise_unit_id(unit_id: &str) -> String {
    unit_id
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' | '=' => c,
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_sort_in_order() {
        assert_eq!(
            catalogue_page("j1", 7),
            "jobs/j1/catalogue/page=00007.parquet"
        );
        assert!(catalogue_page("j1", 9) < catalogue_page("j1", 10));
        assert_eq!(
            neighbours_block("j", "m", 3),
            "jobs/j/neighbours/model=m/block=00003.parquet"
        );
        assert!(catalogue_page("j1", 1).starts_with(&catalogue_prefix("j1")));
    }

    #[test]
    fn failure_keys_are_one_segment() {
        let key = failure("j", Stage::Crawl, "https://shop.example/a?b=c/d");
        assert_eq!(
            key,
            "jobs/j/failures/crawl/https___shop.example_a_b=c_d.json"
        );
    }
}
