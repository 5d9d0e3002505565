//! The naive baseline's queue: it sells at once, once per purchase id, first come first served,
//! and never past the tickets that exist. Run against SQLite always, and against PostgreSQL
//! when `TICKET_TEST_POSTGRES_URL` is set (in a schema of its own, dropped at the end).

// Helpers here are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use benches::naive::NaiveQueue;
use ticket_svc::domain::{EventSpec, Position, PurchaseJob, PurchaseStatus, RejectReason};
use ticket_svc::queue::{Lane, PurchaseQueue};
use ticket_svc::store::{AnyStore, PostgresStore, SqliteStore, Store};

use ticket_svc::testing::purchase as job;

async fn status(store: &AnyStore, j: &PurchaseJob) -> PurchaseStatus {
    store
        .purchase(j.purchase_id)
        .await
        .unwrap()
        .expect("a sold purchase is recorded")
        .status
}

async fn sells_once_in_order_and_never_oversells(store: Arc<AnyStore>) {
    let event = store
        .create_event(&EventSpec::new("naive", 3, 2).unwrap())
        .await
        .unwrap();
    let queue = NaiveQueue::new(Arc::clone(&store));

    let a = job(event.id, "a", 2);
    let first = queue.enqueue(&a).await.unwrap();
    assert_eq!(first.position, Position(0));
    assert!(!first.is_duplicate);
    assert_eq!(status(&store, &a).await, PurchaseStatus::Confirmed);

    // The same purchase id again (a retried Idempotency-Key): same place, nothing sold twice.
    let again = queue.enqueue(&a).await.unwrap();
    assert_eq!(again.position, Position(0));
    assert!(again.is_duplicate);
    assert_eq!(store.event(event.id).await.unwrap().unwrap().sold, 2);

    // Two more would oversell: rejected, and the line goes on.
    let b = job(event.id, "b", 2);
    assert_eq!(queue.enqueue(&b).await.unwrap().position, Position(1));
    assert_eq!(
        status(&store, &b).await,
        PurchaseStatus::Rejected(RejectReason::SoldOut)
    );
    // The per-buyer limit holds too.
    let a2 = job(event.id, "a", 1);
    queue.enqueue(&a2).await.unwrap();
    assert_eq!(
        status(&store, &a2).await,
        PurchaseStatus::Rejected(RejectReason::LimitExceeded)
    );
    let c = job(event.id, "c", 1);
    assert_eq!(queue.enqueue(&c).await.unwrap().position, Position(3));
    assert_eq!(status(&store, &c).await, PurchaseStatus::Confirmed);
    let d = job(event.id, "d", 1);
    queue.enqueue(&d).await.unwrap();
    assert_eq!(
        status(&store, &d).await,
        PurchaseStatus::Rejected(RejectReason::SoldOut)
    );
    assert_eq!(store.event(event.id).await.unwrap().unwrap().sold, 3);

    // Concurrent buyers: positions are unique and the sale stops at the tickets that exist.
    let many = store
        .create_event(&EventSpec::new("naive crowd", 10, 1).unwrap())
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let queue = queue.clone();
        let j = job(many.id, &format!("buyer-{i}"), 1);
        tasks.spawn(async move { queue.enqueue(&j).await.unwrap().position });
    }
    let mut positions: Vec<u64> = tasks.join_all().await.into_iter().map(|p| p.0).collect();
    positions.sort_unstable();
    assert_eq!(positions, (0..40).collect::<Vec<_>>());
    assert_eq!(store.event(many.id).await.unwrap().unwrap().sold, 10);

    // There is no queue to consume.
    assert!(queue.consumer(Lane::Purchases, "w").await.is_err());
}

#[tokio::test]
async fn naive_queue_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("t.db")).await.unwrap();
    sells_once_in_order_and_never_oversells(Arc::new(AnyStore::Sqlite(store))).await;
}

#[tokio::test]
async fn naive_queue_on_postgres() {
    let Ok(url) = std::env::var("TICKET_TEST_POSTGRES_URL") else {
        eprintln!("skipped: TICKET_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("tk_bench_naive_{}", std::process::id());
    let store = PostgresStore::connect_in_schema(&url, &schema, 8)
        .await
        .unwrap();
    let any = Arc::new(AnyStore::Postgres(store.clone()));
    sells_once_in_order_and_never_oversells(any).await;
    store.drop_schema().await.unwrap();
}
