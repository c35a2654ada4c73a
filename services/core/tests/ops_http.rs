//! The ops endpoint: metrics, liveness, and readiness that follows the
//! store, the queue and draining.

mod common;

use std::sync::Arc;

use deepcuts_core::ops_http::{serve, Readiness};
use deepcuts_core::storage::{LocalStore, Store};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn metrics_health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let queue = common::memory_queue(3).await;
    let draining = CancellationToken::new();
    let stop = CancellationToken::new();
    deepcuts_core::metrics::record_unit("crawl", "done", 0.1);
    let addr = serve(
        "127.0.0.1:0",
        Readiness {
            store: Some(store),
            queue: Some(queue),
            draining: draining.clone(),
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let body = metrics.text().await.unwrap();
    assert!(
        body.contains("deepcuts_units_total{stage=\"crawl\",outcome=\"done\"}"),
        "{body}"
    );

    assert_eq!(
        client
            .get(format!("{base}/health/livez"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{base}/health/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    draining.cancel();
    let not_ready = client
        .get(format!("{base}/health/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_ready.status(), 503);
    assert!(not_ready.text().await.unwrap().contains("draining"));
    stop.cancel();
}

#[tokio::test]
async fn readiness_fails_when_the_store_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path().join("store")).unwrap());
    // Replace the store's directory by a file: writes can no longer succeed.
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    std::fs::write(dir.path().join("store"), b"not a directory").unwrap();
    let stop = CancellationToken::new();
    let addr = serve(
        "127.0.0.1:0",
        Readiness {
            store: Some(store),
            queue: None,
            draining: CancellationToken::new(),
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let response = reqwest::get(format!("http://{addr}/health/readyz"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("store"));
    stop.cancel();
}
