//! The worker end to end on local storage: catalogue in, windows + summary +
//! failure records out, and a redelivery rewrites the same bytes.

mod common;

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use deepcuts_core::failures::list_failures;
use deepcuts_core::keys;
use deepcuts_core::parquet_io::{read_parquet, write_batches};
use deepcuts_core::proto::{Stage, TranscodeBatchTask};
use deepcuts_core::storage::{LocalStore, Store};
use deepcuts_transcoder::schema::{self, windows as cols};
use deepcuts_transcoder::{FrontendConfig, TranscodeHandler, TranscoderSettings};

fn catalogue(rows: &[(&str, String)]) -> RecordBatch {
    let mut ids = StringBuilder::new();
    let mut urls = StringBuilder::new();
    for (id, url) in rows {
        ids.append_value(id);
        urls.append_value(url);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("track_id", DataType::Utf8, false),
        Field::new("preview_url", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(ids.finish()), Arc::new(urls.finish())],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writes_windows_summary_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let file_url = |name: &str| {
        url::Url::from_file_path(media.join(name))
            .unwrap()
            .to_string()
    };
    let a = common::music_mp3(&media, "a", 21.0, &["-b", "128"]);
    std::fs::write(media.join("a.mp3"), a).unwrap();
    let b = common::music_mp3(&media, "b", 11.0, &["-b", "320", "-m", "j"]);
    std::fs::write(media.join("b.mp3"), b).unwrap();
    std::fs::write(media.join("broken.mp3"), b"<html>not audio</html>").unwrap();

    let store: Store = Arc::new(LocalStore::new(dir.path().join("store")).unwrap());
    let cat_key = keys::catalogue_page("job1", 1);
    let rows = [
        ("aaaa", file_url("a.mp3")),
        ("bbbb", file_url("b.mp3")),
        ("broken", file_url("broken.mp3")),
        ("missing", file_url("missing.mp3")),
        ("other", file_url("a.mp3")),
    ];
    write_batches(store.as_ref(), &cat_key, &[catalogue(&rows)])
        .await
        .unwrap();

    let handler = TranscodeHandler::new(store.clone(), TranscoderSettings::default()).unwrap();
    let task = TranscodeBatchTask {
        job_id: "job1".into(),
        batch_id: "00007".into(),
        catalogue_key: cat_key,
        track_ids: vec![
            "aaaa".into(),
            "bbbb".into(),
            "broken".into(),
            "missing".into(),
            "ghost".into(),
        ],
        frontend: "default".into(),
    };
    let report = handler.run_batch(&task).await.unwrap();
    assert_eq!(report.succeeded, 2);
    assert_eq!(report.failed, 3);
    assert_eq!(report.windows, 4 + 2);

    let key = keys::spectrogram_batch("job1", "00007");
    let first = store.get(&key).await.unwrap();
    let file = read_parquet(store.as_ref(), &key).await.unwrap();
    let config = FrontendConfig::default();
    let meta = file.schema.metadata();
    let recorded: FrontendConfig = serde_json::from_str(&meta[cols::META_FRONTEND]).unwrap();
    assert_eq!(recorded, config);
    assert_eq!(meta[cols::META_WINDOW_SHAPE], "128x256");
    let batch = &file.batches[0];
    assert_eq!(batch.num_rows(), 6);
    let ids = batch
        .column_by_name(cols::TRACK_ID)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let idx = batch
        .column_by_name(cols::WINDOW_INDEX)
        .unwrap()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .unwrap();
    let data = batch
        .column_by_name(cols::WINDOW)
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeBinaryArray>()
        .unwrap();
    assert_eq!(data.value_length() as usize, 128 * 256);
    let order: Vec<(String, u32)> = (0..6)
        .map(|i| (ids.value(i).to_string(), idx.value(i)))
        .collect();
    assert_eq!(order[0], ("aaaa".to_string(), 0));
    assert_eq!(order[3], ("aaaa".to_string(), 3));
    assert_eq!(order[4], ("bbbb".to_string(), 0));
    // Windows carry real content: a spread of levels, not a constant.
    let w = data.value(1);
    let (lo, hi) = (w.iter().min().unwrap(), w.iter().max().unwrap());
    assert!(*hi == 255 && *lo < 100, "window levels {lo}..{hi}");

    let summary = read_parquet(store.as_ref(), &schema::summary_key("job1", "00007"))
        .await
        .unwrap();
    assert_eq!(summary.num_rows(), 2);

    let failures = list_failures(store.as_ref(), "job1", Some(Stage::Transcode))
        .await
        .unwrap();
    let mut kinds: Vec<(String, String)> = failures
        .iter()
        .map(|f| (f.unit_id.clone(), f.kind.clone()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("00007/broken".to_string(), "unsupported_format".to_string()),
            ("00007/ghost".to_string(), "invalid_source".to_string()),
            ("00007/missing".to_string(), "io".to_string()),
        ]
    );

    // At-least-once delivery: a second run rewrites identical bytes.
    handler.run_batch(&task).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), first);
}
