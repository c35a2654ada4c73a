//! A trainer process killed with SIGKILL mid-epoch, then started again,
//! resumes from its last checkpoint, finishes with a model card, and ends with
//! the same weights as a run that was never killed.

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deepcuts_core::storage::LocalStore;
use deepcuts_trainer::artifact::{self, from_safetensors, ModelCard};
use deepcuts_trainer::fixtures::TinyCatalogue;
use deepcuts_trainer::metrics::TrainReport;
use deepcuts_trainer::BlockingStore;

const EPOCHS: usize = 3;

fn trainer(dir: &Path, config: &Path, model_id: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deepcuts-trainer"));
    command
        .args(["run", "--store"])
        .arg(format!("file://{}", dir.display()))
        .args(["--job", "job", "--model-id", model_id, "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    command
}

/// The newest checkpoint position of a model, read from the store.
fn latest_checkpoint(store: &BlockingStore, model_id: &str) -> Option<(u32, u64)> {
    store
        .list(&artifact::checkpoints_prefix(model_id))
        .unwrap()
        .iter()
        .filter_map(|k| artifact::parse_checkpoint_key(k))
        .max()
}

#[test]
fn sigkilled_trainer_resumes_from_its_checkpoint_and_finishes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = BlockingStore::new(
        Arc::new(LocalStore::new(dir.path()).unwrap()),
        runtime.handle().clone(),
    );
    TinyCatalogue {
        job_id: "job".into(),
        genres: 3,
        tracks_per_genre: 10,
        windows_per_track: 4,
        bands: 32,
        frames: 32,
        tracks_per_part: 6,
        seed: 11,
    }
    .write(&store)
    .unwrap();
    // A checkpoint after every step, so the kill lands between two of them.
    let config = dir.path().join("train.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"epochs": {EPOCHS}, "batch_size": 4, "threads": 1, "width": 8,
                "embedding_dim": 8, "shuffle_buffer": 16, "patience": 10,
                "min_tracks_per_genre": 2, "checkpoint_every_steps": 1,
                "keep_checkpoints": 3,
                "augment": {{"freq_mask": 4, "time_mask": 4, "max_shift": 4}}}}"#
        ),
    )
    .unwrap();

    // Start, wait until the second epoch is under way, then SIGKILL.
    let mut child = trainer(dir.path(), &config, "killed")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if matches!(latest_checkpoint(&store, "killed"), Some((e, s)) if e >= 1 && s >= 2) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the trainer exited before it could be killed"
        );
        assert!(Instant::now() < deadline, "no checkpoint in epoch 2");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no handler, no final checkpoint
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    assert!(
        !store.exists(&artifact::card_key("killed")).unwrap(),
        "no model card before the end"
    );
    let checkpoint = latest_checkpoint(&store, "killed").unwrap();
    assert!(checkpoint.0 >= 1, "{checkpoint:?}");

    // Start again: it must say where it resumes, and finish.
    let output = trainer(dir.path(), &config, "killed").output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "restart failed:\n{log}");
    assert!(log.contains("resuming from checkpoint"), "{log}");
    assert!(
        log.contains(&artifact::checkpoint_key(
            "killed",
            checkpoint.0,
            checkpoint.1
        )),
        "resumed at {checkpoint:?}?\n{log}"
    );
    let card: ModelCard = store
        .get_json(&artifact::card_key("killed"))
        .unwrap()
        .expect("a model card after the restart");
    assert_eq!(card.trained_epochs as usize, EPOCHS);
    let report: TrainReport = store
        .get_json(&artifact::report_key("killed"))
        .unwrap()
        .unwrap();
    assert_eq!(report.resumed_from_epoch, Some(checkpoint.0));
    assert_eq!(
        report.epochs.len(),
        EPOCHS,
        "epoch history survives the kill"
    );

    // The same run never killed ends with bit-identical weights.
    let whole = trainer(dir.path(), &config, "whole").output().unwrap();
    assert!(whole.status.success());
    let (a, _) = from_safetensors(
        "whole",
        &store.get(&artifact::weights_key("whole")).unwrap(),
    )
    .unwrap();
    let (b, _) = from_safetensors(
        "killed",
        &store.get(&artifact::weights_key("killed")).unwrap(),
    )
    .unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(
            t.eq_tensor(&b[name]).all().int64_value(&[]) != 0,
            "variable {name} differs after the kill and resume"
        );
    }
}
