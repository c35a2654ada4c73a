//! The coordinator's HTTP API and `retry-failed`, end to end in one process:
//! the API router on loopback, a running coordinator, the in-process queue and
//! a local store. The tests play the workers by publishing stage events.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deepcuts_coordinator::driver::{cancel_key, retry_key};
use deepcuts_coordinator::{
    api, load_job, request_retry_failed, Coordinator, JobSpec, JobState, JobStatus,
};
use deepcuts_core::failures::{list_failures, write_failure, FailureRecord};
use deepcuts_core::keys;
use deepcuts_core::proto::{
    CrawlPageTask, EmbedTask, Outcome, Stage, StageEvent, TrainTask, TranscodeBatchTask,
};
use deepcuts_core::queue::{names, InProcessQueue, QueueHandle};
use deepcuts_core::storage::{LocalStore, Store};
use deepcuts_scraper::worker::{state_key, NextPage, PageState};
use deepcuts_scraper::CrawlSpec;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Nothing listens here: the crawl tasks are never run, only inspected.
const SHOP: &str = "http://127.0.0.1:9/releases/";

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    queue: QueueHandle,
    base: String,
    client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(LocalStore::new(dir.path()).unwrap());
    let queue: QueueHandle = Arc::new(InProcessQueue::new(3));
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = api::router(store.clone(), queue.clone());
    let server_stop = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(server_stop.cancelled_owned())
            .await
            .unwrap();
    });
    let coordinator = Coordinator::new(store.clone(), queue.clone())
        .with_poll_interval(Duration::from_millis(50));
    tokio::spawn(coordinator.run(stop.clone()));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    Harness {
        _dir: dir,
        store,
        queue,
        base,
        client,
        stop,
    }
}

fn spec(job_id: &str) -> JobSpec {
    JobSpec {
        job_id: job_id.to_owned(),
        crawl: CrawlSpec::new(SHOP),
        model: Default::default(),
        index: Default::default(),
    }
}

impl Harness {
    async fn call(&self, method: &str, path: &str, body: Option<String>) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "POST" => self.client.post(url),
            other => panic!("no method {other}"),
        };
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(body),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"));
        (status, value)
    }

    async fn submit(&self, job_id: &str) -> (StatusCode, Value) {
        let body = serde_json::to_string(&spec(job_id)).unwrap();
        self.call("POST", "/api/jobs", Some(body)).await
    }

    async fn event(
        &self,
        job_id: &str,
        stage: Stage,
        unit: &str,
        outcome: Outcome,
        spawned: &[&str],
    ) {
        let event = StageEvent {
            job_id: job_id.to_owned(),
            stage: stage as i32,
            unit_id: unit.to_owned(),
            outcome: outcome as i32,
            error: if outcome == Outcome::Failed {
                "boom".into()
            } else {
                String::new()
            },
            at_unix_ms: deepcuts_core::now_unix_ms(),
            spawned_units: spawned.iter().map(|s| s.to_string()).collect(),
            detail_json: r#"{"tracks": 3}"#.into(),
        };
        self.queue
            .publish(names::EVENTS, Bytes::from(event.encode_to_vec()))
            .await
            .unwrap();
    }

    /// Waits until the stored job satisfies `done`.
    async fn wait_for(
        &self,
        job_id: &str,
        what: &str,
        done: impl Fn(&JobState) -> bool,
    ) -> JobState {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let job = load_job(&self.store, job_id).await.unwrap().unwrap();
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} never became {what}: {job:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes every message waiting in `queue` and decodes it.
    async fn take<M: Message + Default>(&self, queue: &str) -> Vec<M> {
        let mut consumer = self.queue.consume(queue, 64).await.unwrap();
        let mut taken = Vec::new();
        while let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
        {
            taken.push(M::decode(delivery.payload.clone()).unwrap());
            delivery.ack().await.unwrap();
        }
        taken
    }
}

#[tokio::test]
async fn the_api_submits_lists_reports_and_cancels_jobs() {
    let h = start().await;
    let (status, body) = h.submit("api-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"job_id": "api-1", "status": "crawling", "model_id": "api-1-default-genre"})
    );
    let crawl: Vec<CrawlPageTask> = h.take(names::CRAWL).await;
    assert_eq!(crawl.len(), 1);
    assert_eq!((crawl[0].page_number, crawl[0].url.as_str()), (1, SHOP));

    let (status, body) = h.submit("api-1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"].as_str().unwrap().contains("already exists"),
        "{body}"
    );

    // Malformed JSON, an unknown field, a bad id and a bad start URL are all 400s.
    let (status, body) = h.call("POST", "/api/jobs", Some("{not json".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("invalid job spec"),
        "{body}"
    );
    let mut unknown = serde_json::to_value(spec("api-2")).unwrap();
    unknown["colour"] = json!("blue");
    let (status, _) = h.call("POST", "/api/jobs", Some(unknown.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = h.submit("bad id!").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut ftp = spec("api-3");
    ftp.crawl.start_urls = vec!["ftp://127.0.0.1/".into()];
    let (status, body) = h
        .call(
            "POST",
            "/api/jobs",
            Some(serde_json::to_string(&ftp).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("ftp://"), "{body}");
    assert!(load_job(&h.store, "api-3").await.unwrap().is_none());

    let (status, list) = h.call("GET", "/api/jobs", None).await;
    assert_eq!(status, StatusCode::OK);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["job_id"], "api-1");
    assert_eq!(rows[0]["status"], "crawling");
    assert_eq!(rows[0]["model_id"], "api-1-default-genre");
    assert!(rows[0]["submitted_at_unix_ms"].as_u64().unwrap() > 0);

    let (status, report) = h.call("GET", "/api/jobs/api-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["job_id"], "api-1");
    assert_eq!(report["status"], "crawling");
    let stages = report["stages"].as_array().unwrap();
    let stage_names: Vec<&str> = stages
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stage_names,
        ["crawl", "transcode", "train", "embed", "index"]
    );
    assert_eq!(stages[0]["issued"], 1);
    assert_eq!(stages[0]["pending"], 1);

    for (method, path) in [
        ("GET", "/api/jobs/nope"),
        ("GET", "/api/jobs/bad%20id"),
        ("POST", "/api/jobs/nope/cancel"),
        ("POST", "/api/jobs/nope/retry-failed"),
    ] {
        let (status, body) = h.call(method, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("no job"), "{body}");
    }

    // The job sends no events (nothing crawls it): the cancel still applies.
    let (status, body) = h.call("POST", "/api/jobs/api-1/cancel", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({"job_id": "api-1", "cancel_requested": true}));
    assert!(h.store.exists(&cancel_key("api-1")).await.unwrap());
    h.wait_for("api-1", "cancelled", |j| j.status == JobStatus::Cancelled)
        .await;
    let (_, report) = h.call("GET", "/api/jobs/api-1", None).await;
    assert_eq!(report["status"], "cancelled");
    let (status, body) = h.call("POST", "/api/jobs/api-1/retry-failed", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
}

fn page_state(page: u32, next: Option<&str>, spawned: &[&str]) -> Bytes {
    let state = PageState {
        page,
        chain: 0,
        url: format!("{SHOP}?page={page}"),
        tracks_on_page: spawned.len() as u64,
        tracks_through: 3,
        next: next.map(|url| NextPage {
            url: url.to_owned(),
            chain: 0,
        }),
        published: true,
        spawned_units: spawned.iter().map(|s| s.to_string()).collect(),
    };
    Bytes::from(serde_json::to_vec(&state).unwrap())
}

#[tokio::test]
async fn retry_failed_reissues_the_crawl_pages_and_batches_of_a_failed_job() {
    let h = start().await;
    let job = "r1";
    assert_eq!(h.submit(job).await.0, StatusCode::CREATED);
    assert_eq!(h.take::<CrawlPageTask>(names::CRAWL).await.len(), 1);

    // What the scraper leaves: page 1 with its catalogue and a next page;
    // page 2 failed for good after writing a state with nothing spawned.
    let next = format!("{SHOP}?page=2");
    let page1_spawned = ["transcode:page-00001", "crawl:page=00002"];
    let s = &h.store;
    s.put(
        &state_key(job, 1),
        page_state(1, Some(&next), &page1_spawned),
    )
    .await
    .unwrap();
    s.put(&state_key(job, 2), page_state(2, None, &[]))
        .await
        .unwrap();
    s.put(
        &keys::catalogue_page(job, 1),
        Bytes::from_static(b"parquet"),
    )
    .await
    .unwrap();
    for (stage, unit) in [
        (Stage::Crawl, "page=00002"),
        (Stage::Transcode, "page-00001"),
    ] {
        let record = FailureRecord::new(job, stage, unit, "boom", "boom");
        write_failure(s.as_ref(), &record).await.unwrap();
    }
    h.event(
        job,
        Stage::Crawl,
        "page=00001",
        Outcome::Done,
        &page1_spawned,
    )
    .await;
    h.event(job, Stage::Crawl, "page=00002", Outcome::Failed, &[])
        .await;
    h.event(job, Stage::Transcode, "page-00001", Outcome::Failed, &[])
        .await;
    let failed = h
        .wait_for(job, "failed", |j| j.status == JobStatus::Failed)
        .await;
    assert_eq!(
        failed.error.as_deref(),
        Some("every transcode batch failed")
    );

    let (status, summary) = h.call("POST", "/api/jobs/r1/retry-failed", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{summary}");
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["resume_status"], "crawling");
    assert_eq!(
        summary["units"],
        json!([
            {"stage": "crawl", "unit_id": "page=00002"},
            {"stage": "transcode", "unit_id": "page-00001"},
        ])
    );
    assert_eq!(summary["skipped"], json!([]));

    let resumed = h
        .wait_for(job, "crawling", |j| j.status == JobStatus::Crawling)
        .await;
    assert_eq!(resumed.error, None);
    assert_eq!(resumed.finished_at_unix_ms, None);
    assert_eq!(resumed.ledger(Stage::Crawl).pending(), 1);
    assert_eq!(resumed.ledger(Stage::Transcode).pending(), 1);
    let crawl: Vec<CrawlPageTask> = h.take(names::CRAWL).await;
    assert_eq!(
        crawl,
        vec![CrawlPageTask {
            job_id: job.into(),
            url: next.clone(),
            page_number: 2,
            crawl_spec_key: keys::crawl_spec(job),
        }]
    );
    let transcode: Vec<TranscodeBatchTask> = h.take(names::TRANSCODE).await;
    assert_eq!(
        transcode,
        vec![TranscodeBatchTask {
            job_id: job.into(),
            batch_id: "page-00001".into(),
            catalogue_key: keys::catalogue_page(job, 1),
            track_ids: vec![],
            frontend: "default".into(),
        }]
    );
    // Page 2's dead-end state is gone, so the scraper fetches it again;
    // page 1's stays. The failure records of the retried units are gone.
    assert!(!s.exists(&state_key(job, 2)).await.unwrap());
    assert!(s.exists(&state_key(job, 1)).await.unwrap());
    assert!(list_failures(s.as_ref(), job, None)
        .await
        .unwrap()
        .is_empty());
    assert!(!s.exists(&retry_key(job)).await.unwrap());
    let (_, report) = h.call("GET", "/api/jobs/r1", None).await;
    assert_eq!(report["error"], Value::Null);
    assert_eq!(report["stages"][0]["failed"], 0);

    // The retried units succeed and the job moves on by itself.
    h.event(
        job,
        Stage::Crawl,
        "page=00002",
        Outcome::Done,
        &["transcode:page-00002"],
    )
    .await;
    h.event(job, Stage::Transcode, "page-00001", Outcome::Done, &[])
        .await;
    h.event(job, Stage::Transcode, "page-00002", Outcome::Done, &[])
        .await;
    h.wait_for(job, "training", |j| j.status == JobStatus::Training)
        .await;
    let train: Vec<TrainTask> = h.take(names::TRAIN).await;
    assert_eq!(train.len(), 1);

    // Nothing failed any more: nothing is requested.
    let (status, summary) = h.call("POST", "/api/jobs/r1/retry-failed", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["units"], json!([]));
    assert!(!s.exists(&retry_key(job)).await.unwrap());
}

#[tokio::test]
async fn a_retried_training_runs_again_and_the_job_goes_on_to_embedding() {
    let h = start().await;
    let job = "t1";
    assert_eq!(h.submit(job).await.0, StatusCode::CREATED);
    h.event(
        job,
        Stage::Crawl,
        "page=00001",
        Outcome::Done,
        &["transcode:page-00001"],
    )
    .await;
    h.event(job, Stage::Transcode, "page-00001", Outcome::Done, &[])
        .await;
    h.wait_for(job, "training", |j| j.status == JobStatus::Training)
        .await;
    let first: Vec<TrainTask> = h.take(names::TRAIN).await;
    assert_eq!(first.len(), 1);
    let model = first[0].model_id.clone();
    h.event(job, Stage::Train, &model, Outcome::Failed, &[])
        .await;
    h.wait_for(job, "failed", |j| j.status == JobStatus::Failed)
        .await;

    // The library call the CLI makes.
    let summary = request_retry_failed(&h.store, job).await.unwrap();
    assert_eq!(summary.status, JobStatus::Failed);
    assert_eq!(summary.resume_status, JobStatus::Training);
    assert_eq!(summary.units.len(), 1);
    assert_eq!(summary.units[0].unit_id, model);
    h.wait_for(job, "training", |j| j.status == JobStatus::Training)
        .await;
    let again: Vec<TrainTask> = h.take(names::TRAIN).await;
    assert_eq!(again, first, "the same train task is issued again");

    h.store
        .put(
            &keys::spectrogram_batch(job, "page-00001"),
            Bytes::from_static(b"parquet"),
        )
        .await
        .unwrap();
    h.event(job, Stage::Train, &model, Outcome::Done, &[]).await;
    h.wait_for(job, "embedding", |j| j.status == JobStatus::Embedding)
        .await;
    let embed: Vec<EmbedTask> = h.take(names::EMBED).await;
    assert_eq!(embed.len(), 1);
    assert_eq!(
        embed[0].spectrogram_key,
        keys::spectrogram_batch(job, "page-00001")
    );
}
