//! The `PurchaseQueue` contract (see `ticket_svc::queue`), one suite run on both
//! implementations: the in-memory queue and the broker-backed queue over a real broker on a
//! temp dir and port 0. What only one of them does (the memory queue's fault switches and
//! stats, the broker client's request sharing and its dead broker) is tested beside it.

use std::time::Duration;

use broker::testing::TestBroker;
use ticket_svc::domain::{EventId, Position, PurchaseJob};
use ticket_svc::queue::{
    BrokerQueue, BrokerQueueConfig, JobConsumer, Lane, MemoryQueue, MemoryQueueConfig,
    PurchaseQueue,
};
use ticket_svc::testing::purchase;

/// Every contract test allows this many deliveries before a dead letter.
const MAX_ATTEMPTS: u32 = 2;
/// How long a fetch that must find jobs may wait for them.
const ARRIVES: Duration = Duration::from_secs(3);
/// How long a fetch that must find nothing waits before it says so.
const NOTHING: Duration = Duration::from_millis(300);

fn memory_queue() -> MemoryQueue {
    MemoryQueue::new(MemoryQueueConfig {
        partitions: 4,
        max_attempts: MAX_ATTEMPTS,
        ..Default::default()
    })
}

/// A broker-backed queue of 4 partitions over `b`, dead-lettering after [`MAX_ATTEMPTS`].
pub async fn broker_queue(b: &TestBroker) -> BrokerQueue {
    let mut cfg = BrokerQueueConfig::new(b.addr.to_string());
    cfg.partitions = 4;
    cfg.max_attempts = MAX_ATTEMPTS;
    cfg.lease = Duration::from_secs(5);
    BrokerQueue::connect(cfg, Duration::from_secs(5))
        .await
        .unwrap()
}

/// One contract test on both queues: `$name(&queue)` with a fresh queue each.
macro_rules! on_both_queues {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(&super::memory_queue()).await;
            }

            #[tokio::test]
            async fn broker() {
                let b = broker::testing::TestBroker::start().await;
                super::$name(&super::broker_queue(&b).await).await;
            }
        }
    };
}

on_both_queues!(positions_order_an_events_jobs_and_a_repeat_gets_the_first);
async fn positions_order_an_events_jobs_and_a_repeat_gets_the_first(q: &impl PurchaseQueue) {
    let first = purchase(EventId(1), "ann", 1);
    let a = q.enqueue(&first).await.unwrap();
    let other = q.enqueue(&purchase(EventId(1), "bob", 2)).await.unwrap();
    let again = q.enqueue(&first).await.unwrap();
    assert!(!a.is_duplicate);
    assert_eq!(a.position, Position(0), "an event's line starts at 0");
    assert_eq!(other.position, Position(1), "later arrival, next position");
    assert!(again.is_duplicate);
    assert_eq!(again.position, a.position);
}

on_both_queues!(an_events_line_belongs_to_one_consumer_until_acked);
async fn an_events_line_belongs_to_one_consumer_until_acked(q: &impl PurchaseQueue) {
    for buyer in ["a", "b", "c"] {
        q.enqueue(&purchase(EventId(1), buyer, 1)).await.unwrap();
    }
    let mut a = q.consumer(Lane::Purchases, "a").await.unwrap();
    let mut b = q.consumer(Lane::Purchases, "b").await.unwrap();
    let got = a.fetch(2, ARRIVES).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(
        b.fetch(10, NOTHING).await.unwrap().is_empty(),
        "no other consumer gets jobs of a partition with unacked deliveries"
    );
    let tags: Vec<_> = got.iter().map(|d| d.tag).collect();
    a.ack(&tags).await.unwrap();
    // Acked, the line may stay with its consumer or go to another: the next job comes to one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rest = loop {
        let rest = b.fetch(10, NOTHING).await.unwrap();
        if !rest.is_empty() {
            break rest;
        }
        let rest = a.fetch(10, NOTHING).await.unwrap();
        if !rest.is_empty() {
            break rest;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job after the acked ones was never delivered"
        );
    };
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].job.position, Position(2));
}

on_both_queues!(jobs_come_in_order_and_a_nacked_job_comes_back_then_dead_letters);
async fn jobs_come_in_order_and_a_nacked_job_comes_back_then_dead_letters(q: &impl PurchaseQueue) {
    let jobs: Vec<PurchaseJob> = (0..5)
        .map(|i| purchase(EventId(7), &format!("buyer-{i}"), 1))
        .collect();
    for j in &jobs {
        q.enqueue(j).await.unwrap();
    }
    let mut w = q.consumer(Lane::Purchases, "w1").await.unwrap();
    let got = w.fetch(10, ARRIVES).await.unwrap();
    let buyers: Vec<&str> = got.iter().map(|d| d.job.job.buyer.as_str()).collect();
    assert_eq!(
        buyers,
        ["buyer-0", "buyer-1", "buyer-2", "buyer-3", "buyer-4"]
    );
    assert!(got.iter().all(|d| d.attempt == 1));
    assert!(
        got.windows(2)
            .all(|w| w[0].job.position < w[1].job.position)
    );
    // Done with the first two; the third fails twice (max attempts 2) and is dead-lettered.
    w.ack(&[got[0].tag, got[1].tag]).await.unwrap();
    w.nack(&[got[2].tag], Duration::ZERO).await.unwrap();
    let again = w.fetch(10, ARRIVES).await.unwrap();
    let buyers: Vec<&str> = again.iter().map(|d| d.job.job.buyer.as_str()).collect();
    assert_eq!(
        buyers,
        ["buyer-2", "buyer-3", "buyer-4"],
        "redelivered from the failed job, in order"
    );
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[1].attempt, 1, "taken back behind it, not charged");
    // Its last attempt: dead-lettered; what was delivered behind it stays delivered.
    w.nack(&[again[0].tag], Duration::ZERO).await.unwrap();
    w.ack(&[again[1].tag, again[2].tag]).await.unwrap();
    assert!(w.fetch(10, NOTHING).await.unwrap().is_empty());
    let mut dlq = q.consumer(Lane::DeadLetters, "auditor").await.unwrap();
    let dead = dlq.fetch(10, ARRIVES).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.job, jobs[2]);
    assert_eq!(
        dead[0].job.position, got[2].job.position,
        "keeps its place in line"
    );
    assert!(dead[0].dead_letter_reason.is_some());
}

on_both_queues!(a_dead_consumers_jobs_go_to_another);
async fn a_dead_consumers_jobs_go_to_another(q: &impl PurchaseQueue) {
    q.enqueue(&purchase(EventId(3), "ann", 1)).await.unwrap();
    let mut w1 = q.consumer(Lane::Purchases, "w1").await.unwrap();
    assert_eq!(w1.fetch(10, ARRIVES).await.unwrap().len(), 1);
    drop(w1);
    let mut w2 = q.consumer(Lane::Purchases, "w2").await.unwrap();
    let got = w2.fetch(10, ARRIVES).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt, 2);
}
