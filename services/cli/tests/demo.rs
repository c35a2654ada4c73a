//! The `deepcuts` binary end to end on embedded defaults.

use std::process::Command;

fn deepcuts() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deepcuts"))
}

/// Reads every neighbour block of a job from the file store.
fn neighbour_rows(data: &std::path::Path, job_id: &str) -> Vec<(String, Vec<String>, Vec<f32>)> {
    use arrow::array::{Array, Float32Array, ListArray, StringArray};
    let root = data.join("jobs").join(job_id).join("neighbours");
    let mut rows = Vec::new();
    let mut files: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no neighbour blocks under {}",
        root.display()
    );
    for path in files {
        let file = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("track_id").unwrap();
            let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
            let neighbours = batch.column_by_name("neighbour_ids").unwrap();
            let neighbours = neighbours.as_any().downcast_ref::<ListArray>().unwrap();
            let scores = batch.column_by_name("scores").unwrap();
            let scores = scores.as_any().downcast_ref::<ListArray>().unwrap();
            for row in 0..batch.num_rows() {
                let n = neighbours.value(row);
                let n = n.as_any().downcast_ref::<StringArray>().unwrap();
                let s = scores.value(row);
                let s = s.as_any().downcast_ref::<Float32Array>().unwrap();
                rows.push((
                    ids.value(row).to_owned(),
                    (0..n.len()).map(|i| n.value(i).to_owned()).collect(),
                    s.values().to_vec(),
                ));
            }
        }
    }
    rows
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn demo_runs_the_whole_pipeline_and_builds_a_neighbour_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = deepcuts()
        .args([
            "demo",
            "--tracks",
            "72",
            "--preview-seconds",
            "30",
            "--epochs",
            "2",
            "--json",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let report = &summary["report"];
    assert_eq!(report["status"], "done", "{report:#}");
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["crawl", "transcode", "train", "embed", "index"]);
    for stage in report["stages"].as_array().unwrap() {
        assert!(stage["done"].as_u64().unwrap() >= 1, "{stage}");
        assert_eq!(stage["pending"], 0, "{stage}");
    }
    assert!(report["model_metrics"]["holdout"].is_object(), "{report:#}");
    assert_eq!(summary["examples"].as_array().unwrap().len(), 3);

    let job_id = report["job_id"].as_str().unwrap();
    let rows = neighbour_rows(&data, job_id);
    assert_eq!(rows.len(), 72, "every track is in the table once");
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), 72);
    for (track, neighbours, scores) in &rows {
        assert_eq!(neighbours.len(), 10, "{track} has k neighbours");
        assert_eq!(scores.len(), 10);
        assert!(!neighbours.contains(track), "{track} lists itself");
        assert!(neighbours.iter().all(|n| ids.contains(n.as_str())));
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "{track}: scores not sorted: {scores:?}"
        );
    }
}

#[test]
fn doctor_checks_the_embedded_store_and_queue() {
    let dir = tempfile::tempdir().unwrap();
    let output = deepcuts()
        .args(["doctor", "--json", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checks: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let checks = checks.as_array().unwrap();
    assert_eq!(checks.len(), 4);
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
}

#[test]
fn doctor_fails_loudly_on_an_unreachable_broker() {
    let dir = tempfile::tempdir().unwrap();
    let output = deepcuts()
        .args([
            "doctor",
            "--json",
            "--queue",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "--store",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let checks: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let queue = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "queue round trip")
        .unwrap();
    assert_eq!(queue["ok"], false);
}
