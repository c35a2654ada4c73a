//! The RabbitMQ server is stopped and started again mid-test: the consumer
//! reconnects, publishes made while it was down are confirmed afterwards,
//! and every message is delivered. (Its own test binary, so no other test
//! shares the broker while it is down.)

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;

fn run(var: &str) {
    let cmd = common::required_env(var);
    let status = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .status()
        .expect("run server script");
    assert!(status.success(), "{cmd} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_publisher_survive_a_broker_restart() {
    let queue = common::amqp_queue(5).await;
    let q = common::unique("restart");
    let total = 40u32;
    for i in 0..total / 2 {
        queue
            .publish(&q, Bytes::from(format!("m{i:03}")))
            .await
            .unwrap();
    }
    let mut consumer = queue.consume(&q, 4).await.unwrap();
    let mut received = BTreeSet::new();
    for _ in 0..10 {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .unwrap()
            .unwrap();
        received.insert(String::from_utf8(d.payload.to_vec()).unwrap());
        d.ack().await.unwrap();
    }

    // Stop the broker; publish the second half while it is down (each publish
    // waits, reconnects, and resends until confirmed); start it again.
    tokio::task::spawn_blocking(|| run("DEEPCUTS_TEST_BROKER_STOP"))
        .await
        .unwrap();
    let publisher = {
        let queue = queue.clone();
        let q = q.clone();
        tokio::spawn(async move {
            for i in total / 2..total {
                queue
                    .publish(&q, Bytes::from(format!("m{i:03}")))
                    .await
                    .expect("confirmed after the restart");
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::spawn_blocking(|| run("DEEPCUTS_TEST_BROKER_START"))
        .await
        .unwrap();
    publisher.await.unwrap();

    let expected: BTreeSet<String> = (0..total).map(|i| format!("m{i:03}")).collect();
    while received != expected {
        let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "missing after restart: {:?}",
                    expected.difference(&received).collect::<Vec<_>>()
                )
            })
            .expect("consumer stays open across the restart");
        received.insert(String::from_utf8(d.payload.to_vec()).unwrap());
        // Acks of deliveries from the dead channel may fail; those come again.
        let _ = d.ack().await;
    }
    assert_eq!(received, expected, "every message delivered, none lost");
}
