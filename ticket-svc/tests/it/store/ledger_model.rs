//! Every store decides as the pure ledger ([`ticket_svc::domain::Ledger`]) does, whatever
//! the arrivals, batching and redeliveries: a property test on SQLite, PostgreSQL and sharded
//! PostgreSQL.

use ticket_svc::domain::QueuedJob;
use ticket_svc::store::{SqliteStore, Store};

use super::{postgres_store, shards_of, spec, stamping};

/// Arrivals (buyer, quantity), tickets, max_per_buyer, batch sizes, and redeliveries (a job index
/// repeated inside a later batch).
type Scenario = (Vec<(u8, u32)>, u32, u32, Vec<usize>, Vec<usize>);

fn scenario() -> impl proptest::strategy::Strategy<Value = Scenario> {
    use proptest::prelude::*;
    (1u32..5).prop_flat_map(|max| {
        (
            proptest::collection::vec((0u8..6, 1..=max), 1..50),
            0u32..40,
            Just(max),
            proptest::collection::vec(1usize..12, 1..10),
            proptest::collection::vec(0usize..50, 0..10),
        )
    })
}

/// The store decides exactly as the pure ledger does, whatever the batching and redeliveries.
async fn decides_like_the_ledger<S: Store>(
    s: &S,
    (arrivals, tickets, max, sizes, again): Scenario,
) {
    use ticket_svc::domain::{Ledger, decide_in_order};
    let e = s
        .create_event(&spec(i64::from(tickets), i64::from(max)))
        .await
        .unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    let jobs: Vec<QueuedJob> = arrivals
        .iter()
        .enumerate()
        .map(|(i, (b, q))| job(e.id, &format!("b{b}"), *q, i as u64))
        .collect();
    let mut reference = Ledger::new();
    reference.add_event(e.id, tickets, max, 0);
    let expected = decide_in_order(&mut reference, &jobs);

    let mut start = 0;
    for size in sizes.iter().cycle() {
        if start >= jobs.len() {
            break;
        }
        let end = (start + size).min(jobs.len());
        let mut batch = jobs[start..end].to_vec();
        // Redeliver some already-decided jobs in the same transaction.
        batch.extend(
            again
                .iter()
                .filter(|i| **i < start)
                .map(|i| jobs[*i].clone()),
        );
        let got = s.decide_batch(&batch).await.unwrap();
        for (j, d) in batch.iter().zip(&got) {
            let i = usize::try_from(j.position.0).unwrap();
            assert_eq!(d.status, expected[i].status, "job {i}");
        }
        start = end;
    }
    let sold = s.event(e.id).await.unwrap().unwrap().sold;
    assert_eq!(Some(sold), reference.sold(e.id));
}

fn run_cases<S: Store>(s: &S, cases: u32) {
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    runner
        .run(&scenario(), |sc| {
            tokio::task::block_in_place(|| handle.block_on(decides_like_the_ledger(s, sc)));
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_decides_like_the_ledger_for_any_batching() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path().join("t.db")).await.unwrap();
    run_cases(&s, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_decides_like_the_ledger_for_any_batching() {
    let Some(s) = postgres_store().await else {
        return;
    };
    run_cases(&s, 24);
    s.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_decides_like_the_ledger_for_any_batching() {
    let Some(dbs) = crate::sharded::TestDatabases::new(2).await else {
        return;
    };
    let s = dbs.open().await;
    run_cases(&s, 16);
}
