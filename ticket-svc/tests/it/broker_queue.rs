//! What only the broker-backed queue does, against a real broker on a temp dir and port 0: a
//! dead broker is a prompt error, and concurrent enqueues share produce requests. The
//! `PurchaseQueue` contract itself is `queue_contract`, run on this queue and the memory one.

use std::time::Duration;

use broker::testing::TestBroker;
use ticket_svc::domain::{EventId, PurchaseJob};
use ticket_svc::queue::{BrokerQueue, BrokerQueueConfig, PurchaseQueue};

fn job(event: i64, buyer: &str, quantity: u32) -> PurchaseJob {
    ticket_svc::testing::purchase(EventId(event), buyer, quantity)
}

use crate::queue_contract::broker_queue as queue;

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
