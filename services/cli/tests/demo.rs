//! The `deepcuts` binary end to end on embedded defaults.

use std::process::Command;

fn deepcuts() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deepcuts"))
}

#[test]
fn demo_crawls_the_simulated_shop_into_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let output = deepcuts()
        .args([
            "demo",
            "--tracks",
            "45",
            "--preview-seconds",
            "2",
            "--json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let per_genre = summary["tracks_per_genre"].as_object().unwrap();
    assert_eq!(
        per_genre.len(),
        9,
        "the nine genres of the original project"
    );
    let tracks: u64 = per_genre.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(tracks, 45, "every track of the shop is crawled, once");
    let crawl = &summary["stages"][0];
    assert_eq!(crawl["stage"], "crawl");
    assert!(crawl["units"].as_u64().unwrap() >= 1);
    assert_eq!(crawl["failed"], 0);

    // A second run starts fresh and gives the same catalogue.
    let again = deepcuts()
        .args([
            "demo",
            "--tracks",
            "45",
            "--preview-seconds",
            "2",
            "--json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["tracks_per_genre"], summary["tracks_per_genre"]);

    // The artefacts are where the key layout says.
    let listed = deepcuts()
        .args([
            "store",
            "ls",
            "jobs/demo-2017-45/catalogue/",
            "--json",
            "--store",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(listed.status.success());
    let keys: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        keys.as_array().unwrap().len() as u64,
        crawl["units"].as_u64().unwrap()
    );
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
