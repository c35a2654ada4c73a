//! Helpers shared by the contract tests: connecting to the real servers the
//! test script started. A missing server is a failure, never a skip.
#![allow(dead_code)]

use deepcuts_core::queue::{open_queue, QueueConfig, QueueHandle};
use deepcuts_core::storage::{open_store_with, S3Config, Store, StoreConfig};

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs the real server started by scripts/test.sh \
             (run the tests with scripts/test.sh, or eval \"$(scripts/test-servers.sh start)\" first)"
        )
    })
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A store on the test SeaweedFS, under a fresh prefix.
pub async fn s3_store(multipart_threshold_bytes: u64) -> Store {
    let config = StoreConfig {
        url: format!("s3://deepcuts-test/{}", unique("run")),
        s3: S3Config {
            endpoint: Some(required_env("DEEPCUTS_TEST_S3_ENDPOINT")),
            multipart_threshold_bytes,
            multipart_part_bytes: 5 * 1024 * 1024,
            ..S3Config::default()
        },
    };
    open_store_with(&config)
        .await
        .expect("connect to the test S3 server")
}

pub async fn amqp_queue(delivery_limit: u32) -> QueueHandle {
    open_queue(&QueueConfig {
        url: required_env("DEEPCUTS_TEST_AMQP_URL"),
        delivery_limit,
        publish_timeout_ms: 90_000,
        reconnect_max_backoff_ms: 1_000,
    })
    .await
    .expect("connect to the test RabbitMQ")
}

pub async fn memory_queue(delivery_limit: u32) -> QueueHandle {
    open_queue(&QueueConfig {
        url: "memory://".into(),
        delivery_limit,
        ..QueueConfig::default()
    })
    .await
    .unwrap()
}
