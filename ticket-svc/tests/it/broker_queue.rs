//! The broker-backed queue keeps the `PurchaseQueue` contract, against a real broker on a
//! temp dir and port 0.

use std::time::Duration;

use broker::testing::TestBroker;
use ticket_svc::domain::{EventId, PurchaseId, PurchaseJob};
use ticket_svc::queue::{BrokerQueue, BrokerQueueConfig, JobConsumer, Lane, PurchaseQueue};

fn job(event: i64, buyer: &str, quantity: u32) -> PurchaseJob {
    PurchaseJob {
        purchase_id: PurchaseId::new(),
        event_id: EventId(event),
        buyer: buyer.to_string(),
        quantity,
    }
}

async fn queue(b: &TestBroker) -> BrokerQueue {
    let mut cfg = BrokerQueueConfig::new(b.addr.to_string());
    cfg.partitions = 4;
    cfg.max_attempts = 2;
    cfg.lease = Duration::from_secs(5);
    BrokerQueue::connect(cfg, Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test]
async fn positions_order_an_events_jobs_and_a_repeat_gets_the_first() {
    let b = TestBroker::start().await;
    let q = queue(&b).await;
    let first = job(1, "ann", 1);
    let a = q.enqueue(&first).await.unwrap();
    let other = q.enqueue(&job(1, "bob", 2)).await.unwrap();
    let again = q.enqueue(&first).await.unwrap();
    assert!(!a.is_duplicate);
    assert!(other.position > a.position, "later arrival, later position");
    assert!(again.is_duplicate);
    assert_eq!(again.position, a.position);
}

#[tokio::test]
async fn workers_get_jobs_in_order_and_a_nacked_job_comes_back_then_dead_letters() {
    let b = TestBroker::start().await;
    let q = queue(&b).await;
    let jobs: Vec<PurchaseJob> = (0..5).map(|i| job(7, &format!("buyer-{i}"), 1)).collect();
    for j in &jobs {
        q.enqueue(j).await.unwrap();
    }
    let mut w = q.consumer(Lane::Purchases, "w1").await.unwrap();
    let got = w.fetch(10, Duration::from_secs(2)).await.unwrap();
    let buyers: Vec<&str> = got.iter().map(|d| d.job.job.buyer.as_str()).collect();
    assert_eq!(
        buyers,
        ["buyer-0", "buyer-1", "buyer-2", "buyer-3", "buyer-4"]
    );
    assert!(
        got.windows(2)
            .all(|w| w[0].job.position < w[1].job.position)
    );
    // Done with the first two; the third fails twice (max attempts 2) and is dead-lettered.
    w.ack(&[got[0].tag, got[1].tag]).await.unwrap();
    w.nack(&[got[2].tag], Duration::ZERO).await.unwrap();
    let again = w.fetch(10, Duration::from_secs(2)).await.unwrap();
    let buyers: Vec<&str> = again.iter().map(|d| d.job.job.buyer.as_str()).collect();
    assert_eq!(
        buyers,
        ["buyer-2", "buyer-3", "buyer-4"],
        "redelivered from the failed job, in order"
    );
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[1].attempt, 1, "taken back behind it, not charged");
    w.nack(&[again[0].tag], Duration::ZERO).await.unwrap();
    w.ack(&[again[1].tag, again[2].tag]).await.unwrap();
    assert!(
        w.fetch(10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    let mut dlq = q.consumer(Lane::DeadLetters, "auditor").await.unwrap();
    let dead = dlq.fetch(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job.job, jobs[2]);
    assert_eq!(
        dead[0].job.position, got[2].job.position,
        "keeps its place in line"
    );
    assert!(dead[0].dead_letter_reason.is_some());
}

#[tokio::test]
async fn a_dead_workers_jobs_go_to_another() {
    let b = TestBroker::start().await;
    let q = queue(&b).await;
    q.enqueue(&job(3, "ann", 1)).await.unwrap();
    let mut w1 = q.consumer(Lane::Purchases, "w1").await.unwrap();
    assert_eq!(w1.fetch(10, Duration::from_secs(2)).await.unwrap().len(), 1);
    drop(w1);
    let mut w2 = q.consumer(Lane::Purchases, "w2").await.unwrap();
    let got = w2.fetch(10, Duration::from_secs(3)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt, 2);
}

#[tokio::test]
async fn a_dead_broker_is_a_prompt_error_not_a_hang() {
    let b = TestBroker::start().await;
    let q = queue(&b).await;
    q.check_ready().await.unwrap();
    drop(b.stop().await);
    let started = tokio::time::Instant::now();
    assert!(q.enqueue(&job(1, "ann", 1)).await.is_err());
    assert!(q.check_ready().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "bounded by the enqueue deadline"
    );
}

/// `broker_requests_total{api="produce",outcome="ok"}` from the broker's metrics page.
async fn produce_requests(b: &TestBroker) -> u64 {
    let addr = b.metrics_addr.expect("the test broker serves metrics");
    let page = plumbing::testing::http_get(addr, "/metrics")
        .await
        .unwrap()
        .body;
    page.lines()
        .find(|l| l.starts_with(r#"broker_requests_total{api="produce",outcome="ok"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("the produce request counter is exported")
}

#[tokio::test]
async fn concurrent_enqueues_share_produce_requests_and_each_gets_its_own_answer() {
    let b = TestBroker::start().await;
    let mut cfg = BrokerQueueConfig::new(b.addr.to_string());
    cfg.partitions = 2;
    cfg.connections = 1;
    let q = std::sync::Arc::new(
        BrokerQueue::connect(cfg, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    let before = produce_requests(&b).await;
    // 300 jobs over two events, each sent twice at the same moment (a buyer's retry racing its
    // first try): all queue up behind one connection before its batcher runs.
    let jobs: Vec<PurchaseJob> = (0..300)
        .map(|i| job(1 + i % 2, &format!("buyer-{i}"), 1))
        .collect();
    // On this single-threaded test runtime every spawned enqueue runs before the batcher does.
    let tasks: Vec<_> = jobs
        .iter()
        .flat_map(|j| [j.clone(), j.clone()])
        .map(|j| {
            let q = q.clone();
            tokio::spawn(async move { q.enqueue(&j).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let requests = produce_requests(&b).await - before;
    assert!(
        requests < 10,
        "600 enqueues went out in a few batched Produce requests, not {requests}"
    );
    let mut positions = std::collections::HashSet::new();
    for (j, pair) in jobs.iter().zip(answers.chunks(2)) {
        let (a, b) = (pair[0].as_ref().unwrap(), pair[1].as_ref().unwrap());
        assert_eq!(a.position, b.position, "{}: one place in line", j.buyer);
        assert_eq!(
            u8::from(a.is_duplicate) + u8::from(b.is_duplicate),
            1,
            "{}: exactly one of the two was appended",
            j.buyer
        );
        positions.insert((j.event_id, a.position));
    }
    assert_eq!(positions.len(), 300, "every job has its own place");
}
