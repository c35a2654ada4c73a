//! A run cancelled mid-epoch (as a draining worker is) checkpoints where it
//! stopped, resumes from there, and ends with exactly the weights of a run
//! that was never interrupted. (`kill.rs` does the same with SIGKILL.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deepcuts_core::storage::LocalStore;
use deepcuts_trainer::artifact::{self, from_safetensors};
use deepcuts_trainer::config::TrainConfig;
use deepcuts_trainer::data::Augment;
use deepcuts_trainer::fixtures::TinyCatalogue;
use deepcuts_trainer::train::{train, Observer, Silent, TrainRequest};
use deepcuts_trainer::TrainError;
use deepcuts_trainer::{Architecture, BlockingStore, Objective};

struct AbortAt<'a> {
    epoch: u32,
    step: u64,
    cancel: &'a AtomicBool,
}

impl Observer for AbortAt<'_> {
    fn on_step(&mut self, epoch: u32, step: u64, _loss: f64) {
        if epoch == self.epoch && step == self.step {
            self.cancel.store(true, Ordering::Relaxed);
        }
    }
}

fn request(model_id: &str) -> TrainRequest {
    let config = TrainConfig {
        epochs: 3,
        batch_size: 8,
        threads: 1,
        width: 4,
        embedding_dim: 8,
        projection_dim: 8,
        shuffle_buffer: 16,
        patience: 10,
        augment: Augment {
            freq_mask: 2,
            time_mask: 2,
            max_shift: 2,
        },
        min_tracks_per_genre: 2,
        ..TrainConfig::default()
    };
    TrainRequest {
        job_id: "job".into(),
        model_id: model_id.into(),
        architecture: Architecture::Default,
        objective: Objective::Genre,
        data_job_ids: vec!["job".into()],
        config,
    }
}

#[test]
fn interrupted_run_resumes_and_matches_an_uninterrupted_one() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = BlockingStore::new(
        Arc::new(LocalStore::new(dir.path()).unwrap()),
        runtime.handle().clone(),
    );
    let catalogue = TinyCatalogue {
        job_id: "job".into(),
        genres: 3,
        tracks_per_genre: 8,
        windows_per_track: 4,
        bands: 16,
        frames: 16,
        tracks_per_part: 6,
        seed: 5,
    };
    catalogue.write(&store).unwrap();

    let never_stop = AtomicBool::new(false);
    let whole = train(&store, &request("whole"), &mut Silent, &never_stop).unwrap();
    assert_eq!(whole.report.epochs.len(), 3);
    assert!(whole.resumed_from.is_none());

    // Interrupt the second epoch part-way.
    let cancel = AtomicBool::new(false);
    let mut abort = AbortAt {
        epoch: 1,
        step: 2,
        cancel: &cancel,
    };
    let err = train(&store, &request("split"), &mut abort, &cancel).unwrap_err();
    assert!(matches!(err, TrainError::Cancelled), "{err}");
    assert!(
        store
            .exists(&artifact::checkpoint_key("split", 1, 0))
            .unwrap(),
        "epoch 1 checkpoint written"
    );
    assert!(
        !store.exists(&artifact::card_key("split")).unwrap(),
        "no model card before the end"
    );

    assert!(
        store
            .exists(&artifact::checkpoint_key("split", 1, 2))
            .unwrap(),
        "the cancelled run checkpointed where it stopped"
    );

    let resumed = train(&store, &request("split"), &mut Silent, &never_stop).unwrap();
    assert_eq!(resumed.resumed_from, Some((1, 2)));
    assert_eq!(resumed.report.epochs.len(), 3);
    assert_eq!(resumed.report.resumed_from_epoch, Some(1));

    let a = store.get(&artifact::weights_key("whole")).unwrap();
    let b = store.get(&artifact::weights_key("split")).unwrap();
    let (a, _) = from_safetensors("whole", &a).unwrap();
    let (b, _) = from_safetensors("split", &b).unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let same = t.eq_tensor(&b[name]).all().int64_value(&[]) != 0;
        assert!(same, "variable {name} differs after resume");
    }
    for (x, y) in whole.report.epochs.iter().zip(&resumed.report.epochs) {
        assert_eq!(x.val_loss, y.val_loss, "epoch {} validation loss", x.epoch);
    }

    // A redelivered task for a finished model does no work.
    let again = train(&store, &request("split"), &mut Silent, &never_stop).unwrap();
    assert!(again.already_done);
    assert!(store.exists(&artifact::report_key("split")).unwrap());
    let png = store.get(&artifact::confusion_png_key("split")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}
