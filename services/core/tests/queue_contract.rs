//! The queue contract, run against both backends: in-process, and a real
//! RabbitMQ (started by scripts/test.sh). Each test uses its own queue names.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use deepcuts_core::queue::{names, Consumer, Delivery, QueueHandle, REASON_DELIVERY_LIMIT};

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(700);

async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a delivery within the wait")
        .expect("consumer open")
}

async fn nothing_more(consumer: &mut Consumer) {
    if let Ok(Some(d)) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!(
            "unexpected delivery {:?}",
            String::from_utf8_lossy(&d.payload)
        );
    }
}

async fn publish_is_confirmed_and_ack_removes(queue: QueueHandle) {
    let q = common::unique("ack");
    for i in 0..3 {
        queue
            .publish(&q, Bytes::from(format!("m{i}")))
            .await
            .expect("confirmed");
    }
    let mut consumer = queue.consume(&q, 10).await.unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        let d = next(&mut consumer).await;
        assert_eq!(d.delivery_count, 1);
        assert!(d.dead_letter_reason.is_none());
        got.insert(String::from_utf8(d.payload.to_vec()).unwrap());
        d.ack().await.unwrap();
    }
    assert_eq!(
        got,
        BTreeSet::from(["m0".to_owned(), "m1".to_owned(), "m2".to_owned()])
    );
    nothing_more(&mut consumer).await;
    drop(consumer);
    let mut again = queue.consume(&q, 10).await.unwrap();
    nothing_more(&mut again).await;
}

async fn nack_redelivers(queue: QueueHandle) {
    let q = common::unique("nack");
    queue
        .publish(&q, Bytes::from_static(b"retry me"))
        .await
        .unwrap();
    let mut consumer = queue.consume(&q, 1).await.unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.delivery_count, 1);
    first.requeue().await.unwrap();
    let second = next(&mut consumer).await;
    assert_eq!(&second.payload[..], b"retry me");
    assert_eq!(second.delivery_count, 2);
    second.ack().await.unwrap();
    nothing_more(&mut consumer).await;
}

async fn unsettled_deliveries_come_back(queue: QueueHandle) {
    let q = common::unique("drop");
    queue
        .publish(&q, Bytes::from_static(b"orphan"))
        .await
        .unwrap();
    {
        let mut consumer = queue.consume(&q, 1).await.unwrap();
        let d = next(&mut consumer).await;
        // The worker dies holding the delivery: neither acked nor nacked.
        drop(d);
        drop(consumer);
    }
    let mut consumer = queue.consume(&q, 1).await.unwrap();
    let d = next(&mut consumer).await;
    assert_eq!(&d.payload[..], b"orphan");
    assert!(d.delivery_count >= 2);
    d.ack().await.unwrap();
}

async fn poison_reaches_the_dead_letter_queue(queue: QueueHandle, delivery_limit: u32) {
    let q = common::unique("poison");
    queue
        .publish(&q, Bytes::from_static(b"poison"))
        .await
        .unwrap();
    let mut consumer = queue.consume(&q, 1).await.unwrap();
    // Returned more often than the limit allows: dead-lettered by the queue itself.
    for attempt in 1..=delivery_limit + 1 {
        let d = next(&mut consumer).await;
        assert_eq!(d.delivery_count, attempt);
        d.requeue().await.unwrap();
    }
    nothing_more(&mut consumer).await;
    // Rejected with a reason by the worker.
    queue
        .publish(&q, Bytes::from_static(b"malformed"))
        .await
        .unwrap();
    next(&mut consumer)
        .await
        .reject("cannot parse the page")
        .await
        .unwrap();

    let mut dead = queue.consume(&names::dead_letter(&q), 10).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = next(&mut dead).await;
        seen.push((
            String::from_utf8(d.payload.to_vec()).unwrap(),
            d.dead_letter_reason.clone().unwrap_or_default(),
        ));
        d.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("malformed".to_owned(), "cannot parse the page".to_owned()),
            ("poison".to_owned(), REASON_DELIVERY_LIMIT.to_owned()),
        ]
    );
}

async fn prefetch_is_respected(queue: QueueHandle) {
    let q = common::unique("prefetch");
    for i in 0..5 {
        queue
            .publish(&q, Bytes::from(format!("p{i}")))
            .await
            .unwrap();
    }
    let mut consumer = queue.consume(&q, 2).await.unwrap();
    let a = next(&mut consumer).await;
    let b = next(&mut consumer).await;
    // Two unsettled: the third must wait.
    nothing_more(&mut consumer).await;
    a.ack().await.unwrap();
    let c = next(&mut consumer).await;
    nothing_more(&mut consumer).await;
    b.ack().await.unwrap();
    c.ack().await.unwrap();
    for _ in 0..2 {
        next(&mut consumer).await.ack().await.unwrap();
    }
    nothing_more(&mut consumer).await;
}

const LIMIT: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_queue_keeps_the_contract() {
    let queue = common::memory_queue(LIMIT).await;
    publish_is_confirmed_and_ack_removes(queue.clone()).await;
    nack_redelivers(queue.clone()).await;
    unsettled_deliveries_come_back(queue.clone()).await;
    poison_reaches_the_dead_letter_queue(queue.clone(), LIMIT).await;
    prefetch_is_respected(queue.clone()).await;
    queue.check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_keeps_the_contract() {
    let queue = common::amqp_queue(LIMIT).await;
    publish_is_confirmed_and_ack_removes(queue.clone()).await;
    nack_redelivers(queue.clone()).await;
    unsettled_deliveries_come_back(queue.clone()).await;
    poison_reaches_the_dead_letter_queue(queue.clone(), LIMIT).await;
    prefetch_is_respected(queue.clone()).await;
    queue.check().await.unwrap();
}
