//! The `deepcuts` binary end to end: the demo on embedded defaults, and the
//! same job on real RabbitMQ and S3 with every service as its own process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use deepcuts_core::storage::{open_store_with, S3Config, Store, StoreConfig};

/// The size of both runs (the "about 9 genres × 8 tracks").
const TRACKS: &str = "72";
const PREVIEW_SECONDS: &str = "30";
const EPOCHS: u32 = 2;
const SEED: &str = "2017";

fn deepcuts() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deepcuts"))
}

/// A worker binary of another workspace crate; `cargo test --workspace`
/// builds them all into the same directory as `deepcuts`.
fn sibling_binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_deepcuts")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo test --workspace --no-run`)",
        path.display()
    );
    path
}

/// One neighbour-table row: track, neighbour ids, scores.
type Row = (Vec<String>, Vec<f32>);

/// Reads every neighbour block of a job from a store, by track id.
async fn neighbour_rows(store: &Store, job_id: &str) -> BTreeMap<String, Row> {
    use arrow::array::{Array, Float32Array, ListArray, StringArray};
    let mut keys: Vec<String> = store
        .list(&format!("jobs/{job_id}/neighbours/"))
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with(".parquet"))
        .collect();
    keys.sort();
    assert!(!keys.is_empty(), "job {job_id} has no neighbour blocks");
    let mut rows = BTreeMap::new();
    for key in keys {
        let file = deepcuts_core::parquet_io::read_parquet(store.as_ref(), &key)
            .await
            .unwrap();
        for batch in file.batches {
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            let ids = column("track_id");
            let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
            let neighbours = column("neighbour_ids");
            let neighbours = neighbours.as_any().downcast_ref::<ListArray>().unwrap();
            let scores = column("scores");
            let scores = scores.as_any().downcast_ref::<ListArray>().unwrap();
            for row in 0..batch.num_rows() {
                let n = neighbours.value(row);
                let n = n.as_any().downcast_ref::<StringArray>().unwrap();
                let s = scores.value(row);
                let s = s.as_any().downcast_ref::<Float32Array>().unwrap();
                let previous = rows.insert(
                    ids.value(row).to_owned(),
                    (
                        (0..n.len()).map(|i| n.value(i).to_owned()).collect(),
                        s.values().to_vec(),
                    ),
                );
                assert!(
                    previous.is_none(),
                    "{} is in the table twice",
                    ids.value(row)
                );
            }
        }
    }
    rows
}

/// The embedded demo run, shared by the tests that need it (it is the
/// expensive part: crawl, transcode, train, embed and index in one process).
struct EmbeddedRun {
    summary: serde_json::Value,
    data: PathBuf,
}

fn embedded_run() -> &'static EmbeddedRun {
    static RUN: OnceLock<EmbeddedRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-embedded");
        let _ = std::fs::remove_dir_all(&data);
        let output = deepcuts()
            .args([
                "demo",
                "--tracks",
                TRACKS,
                "--preview-seconds",
                PREVIEW_SECONDS,
            ])
            .args(["--seed", SEED, "--epochs", &EPOCHS.to_string(), "--json"])
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        EmbeddedRun {
            summary: serde_json::from_slice(&output.stdout).unwrap(),
            data,
        }
    })
}

async fn embedded_table(run: &EmbeddedRun) -> BTreeMap<String, Row> {
    let store = open_store_with(&StoreConfig {
        url: run.data.display().to_string(),
        ..StoreConfig::default()
    })
    .await
    .unwrap();
    let job_id = run.summary["report"]["job_id"].as_str().unwrap();
    neighbour_rows(&store, job_id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_whole_pipeline_and_builds_a_neighbour_table() {
    let run = tokio::task::spawn_blocking(embedded_run).await.unwrap();
    let report = &run.summary["report"];
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
    assert_eq!(run.summary["examples"].as_array().unwrap().len(), 3);

    let rows = embedded_table(run).await;
    let tracks: usize = TRACKS.parse().unwrap();
    assert_eq!(rows.len(), tracks, "every track is in the table once");
    for (track, (neighbours, scores)) in &rows {
        assert_eq!(neighbours.len(), 10, "{track} has k neighbours");
        assert_eq!(scores.len(), 10);
        assert!(!neighbours.contains(track), "{track} lists itself");
        assert!(neighbours.iter().all(|n| rows.contains_key(n)));
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "{track}: scores not sorted: {scores:?}"
        );
    }
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts RabbitMQ and SeaweedFS")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One service process of the distributed run, killed however the test ends.
struct Service {
    name: String,
    child: Child,
    ops_port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// `deepcuts_units_in_flight` of this process, read from its `/metrics`.
    fn units_in_flight(&self, stage: &str) -> u64 {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.ops_port)) else {
            return 0;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if stream.write_all(request.as_bytes()).is_err() {
            return 0;
        }
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        let needle = format!("units_in_flight{{stage=\"{stage}\"}} ");
        body.lines()
            .find_map(|line| line.split_once(&needle).map(|(_, v)| v.trim().to_owned()))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

/// What every service process and CLI call of the distributed run shares.
struct Cluster {
    store_url: String,
    s3_endpoint: String,
    amqp_url: String,
    logs: PathBuf,
}

impl Cluster {
    fn configure(&self, command: &mut Command) {
        command
            .env("DEEPCUTS__STORE__URL", &self.store_url)
            .env("DEEPCUTS__STORE__S3__ENDPOINT", &self.s3_endpoint)
            .env("DEEPCUTS__QUEUE__URL", &self.amqp_url);
    }

    fn start(&self, binary: &str, instance: &str, extra_env: &[(&str, &str)]) -> Service {
        let ops_port = free_port();
        let log = std::fs::File::create(self.logs.join(format!("{instance}.log"))).unwrap();
        let mut command = Command::new(sibling_binary(binary));
        command
            .arg("worker")
            .env("DEEPCUTS__OPS__LISTEN", format!("127.0.0.1:{ops_port}"))
            .stdout(Stdio::null())
            .stderr(log);
        self.configure(&mut command);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        Service {
            name: instance.to_owned(),
            child: command
                .spawn()
                .unwrap_or_else(|e| panic!("starting {binary}: {e}")),
            ops_port,
        }
    }

    fn job_status(&self, job_id: &str) -> serde_json::Value {
        let mut command = deepcuts();
        command.args(["job", "status", job_id, "--json"]);
        self.configure(&mut command);
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "job status: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

/// The simulated shop as a process, on a free loopback port.
struct Shop {
    child: Child,
    start_url: String,
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_shop() -> Shop {
    use std::io::BufRead;
    let mut child = Command::new(sibling_binary("deepcuts-shopsim"))
        .args(["--port", "0", "--seed", SEED, "--tracks", TRACKS])
        .args(["--preview-seconds", PREVIEW_SECONDS])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let start_url = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("start url: ").map(str::to_owned))
        .expect("the shop prints its start url");
    Shop { child, start_url }
}

/// Every rank names the same track (or a track tied with it) with the same score.
fn assert_tables_match(embedded: &BTreeMap<String, Row>, distributed: &BTreeMap<String, Row>) {
    assert_eq!(
        embedded.keys().collect::<Vec<_>>(),
        distributed.keys().collect::<Vec<_>>(),
        "the two tables cover different tracks"
    );
    for (track, (e_ids, e_scores)) in embedded {
        let (d_ids, d_scores) = &distributed[track];
        assert_eq!(e_ids.len(), d_ids.len(), "{track}");
        for rank in 0..e_ids.len() {
            assert!(
                (e_scores[rank] - d_scores[rank]).abs() <= 1e-5,
                "{track} rank {rank}: score {} embedded, {} distributed",
                e_scores[rank],
                d_scores[rank]
            );
            if e_ids[rank] != d_ids[rank] {
                // Only a tie may swap two neighbours.
                let tied = e_ids.iter().zip(e_scores).any(|(id, score)| {
                    *id == d_ids[rank] && (score - d_scores[rank]).abs() <= 1e-5
                });
                assert!(
                    tied,
                    "{track} rank {rank}: {} embedded, {} distributed",
                    e_ids[rank], d_ids[rank]
                );
            }
        }
    }
}

/// The distributed acceptance: real RabbitMQ and SeaweedFS, the shop
/// and every service as its own process (two transcoders), the job submitted
/// with `deepcuts job submit`. One transcoder is SIGKILLed while it holds a
/// batch, and the coordinator is SIGKILLed and started again mid-job; the job
/// still completes and its table equals the embedded run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_job_survives_kills_and_matches_the_embedded_run() {
    let amqp_url = required_env("DEEPCUTS_TEST_AMQP_URL");
    let s3_endpoint = required_env("DEEPCUTS_TEST_S3_ENDPOINT");
    let embedded = tokio::task::spawn_blocking(embedded_run).await.unwrap();
    let expected = embedded_table(embedded).await;

    let run_id = uuid_like();
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("distributed-{run_id}"));
    std::fs::create_dir_all(&logs).unwrap();
    let cluster = Cluster {
        store_url: format!("s3://deepcuts-test/e2e-{run_id}"),
        s3_endpoint,
        amqp_url,
        logs: logs.clone(),
    };
    let shop = start_shop();
    let mut coordinator = cluster.start("deepcuts-coordinator", "coordinator-1", &[]);
    let mut transcoders = vec![
        cluster.start("deepcuts-transcoder", "transcoder-1", &[]),
        cluster.start("deepcuts-transcoder", "transcoder-2", &[]),
    ];
    let _others = [
        cluster.start("deepcuts-scraper", "scraper", &[]),
        cluster.start(
            "deepcuts-trainer",
            "trainer",
            &[("DEEPCUTS__SETTINGS__CLAIM_SETTLE_MS", "200")],
        ),
        cluster.start("deepcuts-embedder", "embedder", &[]),
        cluster.start("deepcuts-indexer", "indexer", &[]),
    ];

    let job_id = format!("e2e-{run_id}");
    let train_config = logs.join("train_config.json");
    std::fs::write(&train_config, format!("{{\"epochs\": {EPOCHS}}}")).unwrap();
    let mut submit = deepcuts();
    submit
        .args([
            "job",
            "submit",
            &shop.start_url,
            "--job",
            &job_id,
            "--impolite",
        ])
        .arg("--train-config")
        .arg(&train_config)
        .arg("--json");
    cluster.configure(&mut submit);
    let output = submit.output().unwrap();
    assert!(
        output.status.success(),
        "job submit: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let store = open_store_with(&StoreConfig {
        url: cluster.store_url.clone(),
        s3: S3Config {
            endpoint: Some(cluster.s3_endpoint.clone()),
            ..S3Config::default()
        },
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1200);
    let mut killed_transcoder = None;
    let mut coordinator_restarted = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "job {job_id} not done within 20 minutes; logs in {}",
            logs.display()
        );
        // Polled from job.json directly: a CLI process every 200 ms would
        // take a core from the services on a 2-core runner.
        let state: serde_json::Value = serde_json::from_slice(
            &store
                .get(&format!("jobs/{job_id}/job.json"))
                .await
                .expect("the submitted job has a job.json"),
        )
        .unwrap();
        let status = state["status"].as_str().unwrap().to_owned();
        if ["done", "failed", "cancelled"].contains(&status.as_str()) {
            break;
        }
        if killed_transcoder.is_none() && status == "transcoding" {
            // SIGKILL the transcoder that holds a batch: its deliveries go back
            // to the broker and the other transcoder takes them.
            if let Some(i) = transcoders
                .iter()
                .position(|t| t.units_in_flight("transcode") > 0)
            {
                transcoders[i].child.kill().unwrap();
                transcoders[i].child.wait().unwrap();
                killed_transcoder = Some(transcoders.remove(i).name.clone());
            }
        }
        if !coordinator_restarted && status == "training" {
            coordinator.child.kill().unwrap();
            coordinator.child.wait().unwrap();
            coordinator = cluster.start("deepcuts-coordinator", "coordinator-2", &[]);
            coordinator_restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = cluster.job_status(&job_id);
    assert_eq!(
        report["status"],
        "done",
        "{report:#}; logs in {}",
        logs.display()
    );
    assert!(
        killed_transcoder.is_some(),
        "the transcoding stage ended before a transcoder could be killed mid-batch"
    );
    assert!(coordinator_restarted, "the job never reached training");
    for stage in report["stages"].as_array().unwrap() {
        assert_eq!(stage["pending"], 0, "{stage}");
        assert_eq!(stage["failed"], 0, "{stage}");
    }

    let distributed = neighbour_rows(&store, &job_id).await;
    assert_tables_match(&expected, &distributed);
    drop(coordinator);
    drop(shop);
}

/// A short unique id for store prefixes and job ids.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
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
