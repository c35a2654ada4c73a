//! CI smoke run: train a few steps on a tiny catalogue, embed every part, and
//! check that every track has exactly one unit vector.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use deepcuts_core::keys;
use deepcuts_core::storage::LocalStore;
use deepcuts_embedder::{embed_part, EmbedRequest};
use deepcuts_model::artifact::load_model;
use deepcuts_model::store::BlockingStore;
use deepcuts_trainer::config::TrainConfig;
use deepcuts_trainer::fixtures::TinyCatalogue;
use deepcuts_trainer::train::{train, Silent, TrainRequest};
use deepcuts_trainer::{Architecture, Objective};
use tch::Device;

#[test]
fn every_track_gets_one_unit_vector() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = BlockingStore::new(
        Arc::new(LocalStore::new(dir.path()).unwrap()),
        runtime.handle().clone(),
    );
    let catalogue = TinyCatalogue {
        job_id: "job".into(),
        genres: 2,
        tracks_per_genre: 10,
        windows_per_track: 3,
        bands: 16,
        frames: 16,
        tracks_per_part: 7,
        seed: 9,
    };
    let parts = catalogue.write(&store).unwrap();
    let request = TrainRequest {
        job_id: "job".into(),
        model_id: "tiny".into(),
        architecture: Architecture::Default,
        objective: Objective::Contrastive,
        data_job_ids: vec!["job".into()],
        config: TrainConfig {
            epochs: 2,
            batch_size: 4,
            max_steps_per_epoch: 3,
            threads: 1,
            width: 4,
            embedding_dim: 12,
            projection_dim: 8,
            ..TrainConfig::default()
        },
    };
    let outcome = train(&store, &request, &mut Silent, &AtomicBool::new(false)).unwrap();
    assert!(outcome.report.holdout.recall_at_10.is_some());

    let model = load_model(&store, "tiny", Device::Cpu).unwrap();
    assert_eq!(model.card.embedding_dim, 12);
    let mut seen = HashSet::new();
    for (part, key) in parts.iter().enumerate() {
        let embed = EmbedRequest {
            job_id: "job".into(),
            model_id: "tiny".into(),
            spectrogram_key: key.clone(),
            part: part as u32,
            batch_size: 5,
        };
        let first = embed_part(&store, &model, &embed).unwrap();
        assert_eq!(first.key, keys::embeddings_part("job", "tiny", part as u32));
        let bytes_first = store.get(&first.key).unwrap();
        // A retry rewrites the same key with the same content.
        embed_part(&store, &model, &embed).unwrap();
        assert_eq!(store.get(&first.key).unwrap(), bytes_first);

        let file = store.read_parquet(&first.key).unwrap();
        for batch in &file.batches {
            let ids = batch.column_by_name("track_id").unwrap().as_string::<i32>();
            let counts = batch
                .column_by_name("window_count")
                .unwrap()
                .as_primitive::<arrow_array::types::UInt32Type>();
            let vectors = batch
                .column_by_name("embedding")
                .unwrap()
                .as_fixed_size_list();
            assert_eq!(vectors.value_length(), 12);
            for row in 0..batch.num_rows() {
                assert!(
                    seen.insert(ids.value(row).to_owned()),
                    "track {} embedded twice",
                    ids.value(row)
                );
                assert_eq!(counts.value(row), 3);
                let v = vectors.value(row);
                let v = v.as_primitive::<Float32Type>();
                let norm: f32 = v.values().iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!(
                    (norm - 1.0).abs() < 1e-4,
                    "track {} has norm {norm}",
                    ids.value(row)
                );
            }
        }
    }
    let expected: HashSet<String> = catalogue.track_ids().into_iter().collect();
    assert_eq!(seen, expected);
}
