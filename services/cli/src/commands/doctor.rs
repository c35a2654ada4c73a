//! `deepcuts doctor`: checks that a store and a queue work end to end (write,
//! read back, list, delete; a Parquet artefact; publish, consume, ack), the
//! same way the services use them. Run it against a deployment's S3 and
//! RabbitMQ before submitting jobs, or with no arguments for the embedded defaults.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use deepcuts_core::parquet_io::{read_parquet, write_batches, ParquetFile};
use deepcuts_core::queue::{open_queue, QueueConfig};
use deepcuts_core::storage::{open_store_with, Store};
use serde::Serialize;

use crate::output::{print_json, table};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    target: crate::output::Target,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    ok: bool,
    millis: u128,
    detail: String,
}

async fn timed<F, T>(checks: &mut Vec<Check>, name: &str, work: F) -> Option<T>
where
    F: std::future::Future<Output = anyhow::Result<(T, String)>>,
{
    let started = Instant::now();
    let result = work.await;
    let millis = started.elapsed().as_millis();
    match result {
        Ok((value, detail)) => {
            checks.push(Check {
                check: name.to_owned(),
                ok: true,
                millis,
                detail,
            });
            Some(value)
        }
        Err(err) => {
            checks.push(Check {
                check: name.to_owned(),
                ok: false,
                millis,
                detail: format!("{err:#}"),
            });
            None
        }
    }
}

async fn store_round_trip(store: &Store) -> anyhow::Result<((), String)> {
    let key = format!(".doctor/{}.bin", std::process::id());
    let payload = Bytes::from(vec![7u8; 256 * 1024]);
    store.put(&key, payload.clone()).await?;
    let back = store.get(&key).await?;
    anyhow::ensure!(
        back == payload,
        "read back {} bytes that differ from what was written",
        back.len()
    );
    let listed = store.list(".doctor/").await?;
    anyhow::ensure!(
        listed.contains(&key),
        "the object is missing from the listing"
    );
    store.delete(&key).await?;
    anyhow::ensure!(!store.exists(&key).await?, "the object survived its delete");
    Ok(((), "put, get, list, delete of 256 KiB".to_owned()))
}

async fn parquet_round_trip(store: &Store) -> anyhow::Result<((), String)> {
    use deepcuts_core::parquet_io::schema;
    use std::sync::Arc;
    let key = format!(".doctor/{}.parquet", std::process::id());
    let schema = schema(vec![arrow::datatypes::Field::new(
        "n",
        arrow::datatypes::DataType::UInt32,
        false,
    )]);
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::UInt32Array::from_iter_values(
            0..10_000,
        ))],
    )?;
    write_batches(store.as_ref(), &key, &[batch]).await?;
    let file: ParquetFile = read_parquet(store.as_ref(), &key).await?;
    store.delete(&key).await?;
    anyhow::ensure!(
        file.num_rows() == 10_000,
        "read {} rows of 10000",
        file.num_rows()
    );
    Ok(((), "10,000 rows written and read back (zstd)".to_owned()))
}

async fn queue_round_trip(config: &QueueConfig) -> anyhow::Result<((), String)> {
    let queue = open_queue(&QueueConfig {
        publish_timeout_ms: 10_000,
        ..config.clone()
    })
    .await
    .context("connecting")?;
    let name = "deepcuts.doctor";
    let token = format!(
        "doctor-{}-{}",
        std::process::id(),
        deepcuts_core::now_unix_ms()
    );
    queue
        .publish(name, Bytes::from(token.clone()))
        .await
        .context("publish")?;
    let mut consumer = queue.consume(name, 10).await.context("consume")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let delivery = tokio::time::timeout(remaining, consumer.next())
            .await
            .map_err(|_| anyhow::anyhow!("the published message did not come back within 10 s"))?
            .ok_or_else(|| anyhow::anyhow!("the consumer closed"))?;
        let mine = delivery.payload == token.as_bytes();
        // Messages left by an earlier doctor run are cleared as well.
        delivery.ack().await.context("ack")?;
        if mine {
            return Ok((
                (),
                format!("publish (confirmed), consume, ack on {}", queue.url()),
            ));
        }
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let config = args.target.load()?;
    let mut checks = Vec::new();
    let store = timed(&mut checks, "open store", async {
        let store = open_store_with(&config.store).await?;
        let url = store.url();
        Ok((store, url))
    })
    .await;
    if let Some(store) = &store {
        timed(&mut checks, "store round trip", store_round_trip(store)).await;
        timed(&mut checks, "parquet artefact", parquet_round_trip(store)).await;
    }
    timed(
        &mut checks,
        "queue round trip",
        queue_round_trip(&config.queue),
    )
    .await;
    let healthy = checks.iter().all(|c| c.ok);
    if args.json {
        print_json(&checks)?;
    } else {
        let mut out = table(["check", "result", "ms", "detail"]);
        for c in &checks {
            out.add_row(vec![
                c.check.clone(),
                if c.ok { "ok".into() } else { "FAILED".into() },
                c.millis.to_string(),
                c.detail.clone(),
            ]);
        }
        println!("{out}");
    }
    anyhow::ensure!(healthy, "some checks failed");
    Ok(())
}
