//! The shared store suite: every test here runs against SQLite (temp dir), PostgreSQL
//! (`TICKET_TEST_POSTGRES_URL`, each test in a fresh schema dropped at the end; skipped with a
//! printed reason when the variable is unset) and PostgreSQL sharded over two databases of the
//! test's own (`sharded.rs`; events alternate between them). The tests of waiting rooms and their
//! seals are in `waiting_room`, those of pacing and line paces in `line_pace`, and the property
//! test that every store decides as the pure ledger does in `ledger_model`.

use std::collections::HashMap;
use std::sync::Arc;

use ticket_svc::domain::IdempotencyKey;
use ticket_svc::domain::{
    EventId, EventSpec, Position, PurchaseId, PurchaseJob, PurchaseStatus, QueuedJob, RejectReason,
    SaleWindow, UnixMillis,
};
use ticket_svc::store::{PendingRows, PostgresStore, SqliteStore, Store};

mod ledger_model;
mod line_pace;
mod waiting_room;
use line_pace::{
    a_line_pace_moves_on_only_from_the_one_on_record, a_line_pace_past_i64_max_is_stored_at_it,
    concurrent_line_pace_records_all_answer_one_winner,
    line_paces_need_an_event_with_a_waiting_room, no_line_pace_is_on_record_at_first,
    pacing_round_trips, the_first_line_pace_recorded_stands,
};
use waiting_room::{
    an_event_without_a_waiting_room_reads_none, concurrent_seals_of_a_line_all_answer_one_size,
    sealing_needs_an_event_with_a_waiting_room, the_first_seal_of_a_line_stands,
    waiting_rooms_round_trip,
};

/// A PostgreSQL store in a schema of its own, or `None` (with the reason printed) when no
/// server is configured.
pub async fn postgres_store() -> Option<PostgresStore> {
    let Ok(url) = std::env::var("TICKET_TEST_POSTGRES_URL") else {
        eprintln!("skipped: TICKET_TEST_POSTGRES_URL is not set (PostgreSQL store tests)");
        return None;
    };
    let schema = format!("tk_test_{}", uuid::Uuid::new_v4().simple());
    Some(
        PostgresStore::connect_in_schema(&url, &schema, 4)
            .await
            .expect("TICKET_TEST_POSTGRES_URL is set, so the server must accept a connection"),
    )
}

/// One suite test against SQLite (pending rows written at once).
macro_rules! sqlite_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let store = super::SqliteStore::open(dir.path().join("t.db"))
                .await
                .unwrap();
            super::$name(&store).await;
        }
    };
}

/// One suite test against SQLite as `up` opens it: pending rows wait in memory for their
/// decision.
macro_rules! sqlite_held_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let store = super::SqliteStore::open_with(
                dir.path().join("t.db"),
                super::PendingRows::InMemory,
            )
            .await
            .unwrap();
            super::$name(&store).await;
        }
    };
}

/// One suite test against PostgreSQL.
macro_rules! postgres_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(store) = super::postgres_store().await else {
                return;
            };
            super::$name(&store).await;
            store.drop_schema().await.unwrap();
        }
    };
}

/// One suite test against a store sharded over two fresh databases.
macro_rules! sharded_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(dbs) = crate::sharded::TestDatabases::new(2).await else {
                return;
            };
            let store = dbs.open().await;
            super::$name(&store).await;
        }
    };
}

/// `everywhere` runs on every store; `pending_written` only where `record_pending` writes (with
/// pending rows held, it writes nothing that could fail: a row that cannot be written fails
/// alone when it is flushed, see `sqlite_held_pending_rows_...` below).
macro_rules! store_suite {
    (everywhere: [$($name:ident),* $(,)?], pending_written: [$($w:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(sqlite_test!($name);)*
            $(sqlite_test!($w);)*
        }
        mod sqlite_held_pending {
            $(sqlite_held_test!($name);)*
        }
        mod postgres {
            $(postgres_test!($name);)*
            $(postgres_test!($w);)*
        }
        mod sharded {
            $(sharded_test!($name);)*
            $(sharded_test!($w);)*
        }
    };
}

store_suite!(
    everywhere: [
        events_round_trip,
        sale_windows_round_trip,
        an_event_without_a_window_is_always_on_sale,
        waiting_rooms_round_trip,
        an_event_without_a_waiting_room_reads_none,
        the_first_seal_of_a_line_stands,
        concurrent_seals_of_a_line_all_answer_one_size,
        sealing_needs_an_event_with_a_waiting_room,
        pacing_round_trips,
        no_line_pace_is_on_record_at_first,
        the_first_line_pace_recorded_stands,
        a_line_pace_moves_on_only_from_the_one_on_record,
        a_line_pace_past_i64_max_is_stored_at_it,
        concurrent_line_pace_records_all_answer_one_winner,
        line_paces_need_an_event_with_a_waiting_room,
        decisions_follow_the_rules_and_are_made_once,
        buyer_limit_holds_across_batches,
        pending_purchases_become_decided_and_stay_decided,
        a_decision_before_the_pending_record_wins,
        dead_letters_fail_only_undecided_purchases,
        concurrent_overlapping_batches_never_oversell,
        event_purchases_come_in_position_order,
        readiness_answers,
    ],
    pending_written: [a_failing_write_does_not_disturb_concurrent_ones],
);

fn spec(tickets: i64, max: i64) -> EventSpec {
    EventSpec::new("DJ night", tickets, max).unwrap()
}

use ticket_svc::testing::queued as job;

/// The shards of `events` in `s` (0 on an unsharded store, and for an unknown event).
async fn shards_of<S: Store>(s: &S, events: &[EventId]) -> HashMap<EventId, u8> {
    let mut shards = HashMap::new();
    for e in events {
        shards.insert(*e, s.shard_of(*e).await.unwrap());
    }
    shards
}

/// [`job`] with the purchase id stamped with its event's shard, as the API names purchases
/// (unchanged on an unsharded store).
fn stamping(shards: HashMap<EventId, u8>) -> impl Fn(EventId, &str, u32, u64) -> QueuedJob + Clone {
    move |event, buyer, quantity, position| {
        let mut j = job(event, buyer, quantity, position);
        let shard = shards.get(&event).copied().unwrap_or(0);
        j.job.purchase_id = j.job.purchase_id.on_shard(shard);
        j
    }
}

/// `j` queued again at `position` (a retry past the queue's dedup window).
fn requeued(j: &QueuedJob, position: u64) -> QueuedJob {
    QueuedJob {
        position: Position(position),
        ..j.clone()
    }
}

/// A job whose purchase id comes from an Idempotency-Key.
fn keyed_job(event: EventId, buyer: &str, quantity: u32, position: u64) -> QueuedJob {
    let key = IdempotencyKey::new(&format!("key-{buyer}")).unwrap();
    QueuedJob {
        job: PurchaseJob {
            purchase_id: PurchaseId::for_idempotency_key(event, buyer, &key),
            ..job(event, buyer, quantity, position).job
        },
        position: Position(position),
    }
}

async fn events_round_trip<S: Store>(s: &S) {
    let e = s.create_event(&spec(100, 4)).await.unwrap();
    assert_eq!(e.sold, 0);
    assert_eq!(e.remaining(), 100);
    let back = s.event(e.id).await.unwrap().unwrap();
    assert_eq!(back, e);
    let other = s.create_event(&spec(5, 1)).await.unwrap();
    assert_ne!(other.id, e.id);
    assert!(s.event(EventId(987_654)).await.unwrap().is_none());
}

async fn sale_windows_round_trip<S: Store>(s: &S) {
    let opens = UnixMillis(1_798_135_200_000); // 2026-12-24T18:00:00Z
    let closes = UnixMillis(opens.0 + 3 * 3_600_000 + 1);
    for window in [
        SaleWindow::new(Some(opens), Some(closes)).unwrap(),
        SaleWindow::new(Some(opens), None).unwrap(),
        SaleWindow::new(None, Some(closes)).unwrap(),
        SaleWindow::new(Some(SaleWindow::EARLIEST), Some(SaleWindow::LATEST)).unwrap(),
    ] {
        let e = s
            .create_event(&spec(10, 2).with_window(window))
            .await
            .unwrap();
        assert_eq!(e.window, window);
        assert_eq!((e.tickets, e.max_per_buyer, e.sold), (10, 2, 0));
        let back = s.event(e.id).await.unwrap().unwrap();
        assert_eq!(back, e, "{window:?}");
    }
}

async fn an_event_without_a_window_is_always_on_sale<S: Store>(s: &S) {
    let e = s.create_event(&spec(10, 2)).await.unwrap();
    assert_eq!(e.window, SaleWindow::ALWAYS);
    let back = s.event(e.id).await.unwrap().unwrap();
    assert_eq!(back.window, SaleWindow::ALWAYS);
    assert!(back.window.state_at(UnixMillis::now()).is_open());
}

async fn decisions_follow_the_rules_and_are_made_once<S: Store>(s: &S) {
    let e = s.create_event(&spec(5, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    let jobs = vec![
        job(e.id, "a", 4, 0),
        job(e.id, "b", 2, 1),
        job(e.id, "c", 1, 2),
        job(e.id, "d", 1, 3),
    ];
    let d = s.decide_batch(&jobs).await.unwrap();
    let statuses: Vec<_> = d.iter().map(|d| d.status).collect();
    use PurchaseStatus::*;
    assert_eq!(
        statuses,
        [
            Confirmed,
            Rejected(RejectReason::SoldOut),
            Confirmed,
            Rejected(RejectReason::SoldOut)
        ]
    );
    assert!(d.iter().all(|d| d.is_new));
    assert_eq!(s.event(e.id).await.unwrap().unwrap().sold, 5);

    // Redelivered (whole batch, and a part of it mixed with a new job): read back, sell nothing.
    let again = s.decide_batch(&jobs).await.unwrap();
    assert!(again.iter().all(|d| !d.is_new));
    assert_eq!(again.iter().map(|d| d.status).collect::<Vec<_>>(), statuses);
    let mixed = vec![jobs[2].clone(), job(e.id, "e", 1, 4)];
    let m = s.decide_batch(&mixed).await.unwrap();
    assert_eq!(m[0].status, Confirmed);
    assert!(!m[0].is_new);
    assert_eq!(m[1].status, Rejected(RejectReason::SoldOut));
    assert_eq!(s.event(e.id).await.unwrap().unwrap().sold, 5);

    for (j, st) in jobs.iter().zip(&statuses) {
        let p = s.purchase(j.job.purchase_id).await.unwrap().unwrap();
        assert_eq!(p.status, *st);
        assert_eq!(p.quantity, j.job.quantity);
        assert_eq!(p.position, j.position);
        assert_eq!(p.buyer, j.job.buyer);
        assert_eq!(p.event_id, e.id);
    }
    assert!(s.purchase(PurchaseId::new()).await.unwrap().is_none());
}

async fn buyer_limit_holds_across_batches<S: Store>(s: &S) {
    let e = s.create_event(&spec(100, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    let first = s.decide_batch(&[job(e.id, "ann", 3, 0)]).await.unwrap();
    assert_eq!(first[0].status, PurchaseStatus::Confirmed);
    let second = s
        .decide_batch(&[job(e.id, "ann", 2, 1), job(e.id, "ann", 1, 2)])
        .await
        .unwrap();
    assert_eq!(
        second[0].status,
        PurchaseStatus::Rejected(RejectReason::LimitExceeded)
    );
    assert_eq!(second[1].status, PurchaseStatus::Confirmed);
    let third = s.decide_batch(&[job(e.id, "ann", 1, 3)]).await.unwrap();
    assert_eq!(
        third[0].status,
        PurchaseStatus::Rejected(RejectReason::LimitExceeded)
    );
    assert_eq!(s.event(e.id).await.unwrap().unwrap().sold, 4);
}

async fn pending_purchases_become_decided_and_stay_decided<S: Store>(s: &S) {
    let e = s.create_event(&spec(10, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    let j = job(e.id, "a", 2, 0);
    s.record_pending(&j).await.unwrap();
    let p = s.purchase(j.job.purchase_id).await.unwrap().unwrap();
    assert_eq!(p.status, PurchaseStatus::Pending);
    s.decide_batch(std::slice::from_ref(&j)).await.unwrap();
    s.record_pending(&j).await.unwrap();
    let p = s.purchase(j.job.purchase_id).await.unwrap().unwrap();
    assert_eq!(p.status, PurchaseStatus::Confirmed);

    // A rejection lands on its pending row with its reason, beside a confirmation.
    let small = s.create_event(&spec(3, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id, small.id]).await);
    let first = job(small.id, "a", 2, 0);
    let second = job(small.id, "b", 2, 1);
    for j in [&first, &second] {
        s.record_pending(j).await.unwrap();
    }
    s.decide_batch(&[first.clone(), second.clone()])
        .await
        .unwrap();
    let status = |id| async move { s.purchase(id).await.unwrap().unwrap().status };
    assert_eq!(
        status(first.job.purchase_id).await,
        PurchaseStatus::Confirmed
    );
    assert_eq!(
        status(second.job.purchase_id).await,
        PurchaseStatus::Rejected(RejectReason::SoldOut)
    );
}

async fn a_decision_before_the_pending_record_wins<S: Store>(s: &S) {
    let e = s.create_event(&spec(10, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    let j = job(e.id, "a", 2, 7);
    s.decide_batch(std::slice::from_ref(&j)).await.unwrap();
    assert_eq!(s.record_pending(&j).await.unwrap(), Position(7));
    // Queued again later (a retry past the dedup window): the first position stays on record.
    assert_eq!(
        s.record_pending(&requeued(&j, 99)).await.unwrap(),
        Position(7)
    );
    let p = s.purchase(j.job.purchase_id).await.unwrap().unwrap();
    assert_eq!(p.status, PurchaseStatus::Confirmed);
    assert_eq!(p.position, Position(7));
}

async fn dead_letters_fail_only_undecided_purchases<S: Store>(s: &S) {
    let e = s.create_event(&spec(10, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    let failed = PurchaseStatus::Rejected(RejectReason::Failed);

    let pending = job(e.id, "a", 1, 0);
    s.record_pending(&pending).await.unwrap();
    assert_eq!(s.mark_failed(&pending).await.unwrap(), failed);
    assert_eq!(
        s.purchase(pending.job.purchase_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        failed
    );

    let never_recorded = job(e.id, "b", 1, 1);
    assert_eq!(s.mark_failed(&never_recorded).await.unwrap(), failed);
    assert_eq!(
        s.purchase(never_recorded.job.purchase_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        failed
    );

    let confirmed = job(e.id, "c", 1, 2);
    s.decide_batch(std::slice::from_ref(&confirmed))
        .await
        .unwrap();
    assert_eq!(
        s.mark_failed(&confirmed).await.unwrap(),
        PurchaseStatus::Confirmed
    );
    // A failed purchase stays failed when its job shows up again.
    let again = s
        .decide_batch(std::slice::from_ref(&pending))
        .await
        .unwrap();
    assert_eq!(again[0].status, failed);
    assert_eq!(s.event(e.id).await.unwrap().unwrap().sold, 1);
}

async fn concurrent_overlapping_batches_never_oversell<S: Store + Clone>(s: &S) {
    let e = s.create_event(&spec(60, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    let jobs: Arc<Vec<QueuedJob>> = Arc::new(
        (0..200u64)
            .map(|i| job(e.id, &format!("buyer{}", i % 23), 1 + (i % 4) as u32, i))
            .collect(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..6usize {
        let (s, jobs) = (s.clone(), Arc::clone(&jobs));
        tasks.spawn(async move {
            // Each task walks the line in chunks from its own offset: many jobs are decided
            // concurrently by several tasks (redeliveries to several workers).
            let mut i = (t * 17) % jobs.len();
            for _ in 0..12 {
                let end = (i + 25).min(jobs.len());
                let mut tries = 0;
                loop {
                    match s.decide_batch(&jobs[i..end]).await {
                        Ok(_) => break,
                        Err(e) if e.is_transient() && tries < 50 => tries += 1,
                        Err(e) => panic!("decide_batch: {e}"),
                    }
                }
                i = if end == jobs.len() { 0 } else { end };
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    s.decide_batch(&jobs).await.unwrap();

    let event = s.event(e.id).await.unwrap().unwrap();
    let all = s.event_purchases(e.id, 1_000).await.unwrap();
    assert_eq!(all.len(), jobs.len());
    let confirmed: u32 = all
        .iter()
        .filter(|p| p.status == PurchaseStatus::Confirmed)
        .map(|p| p.quantity)
        .sum();
    assert!(event.sold <= event.tickets);
    assert_eq!(event.sold, confirmed);
    let mut per_buyer: HashMap<&str, u32> = HashMap::new();
    for p in all.iter().filter(|p| p.status == PurchaseStatus::Confirmed) {
        *per_buyer.entry(&p.buyer).or_default() += p.quantity;
    }
    assert!(per_buyer.values().all(|n| *n <= 4));
    // Decisions read back unchanged.
    let again = s.decide_batch(&jobs).await.unwrap();
    for (d, p) in again.iter().zip(&all) {
        assert_eq!(d.status, p.status);
    }
}

async fn event_purchases_come_in_position_order<S: Store>(s: &S) {
    let e = s.create_event(&spec(10, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    for pos in [5u64, 1, 3] {
        s.record_pending(&job(e.id, "a", 1, pos)).await.unwrap();
    }
    let got: Vec<u64> = s
        .event_purchases(e.id, 10)
        .await
        .unwrap()
        .iter()
        .map(|p| p.position.0)
        .collect();
    assert_eq!(got, [1, 3, 5]);
    assert_eq!(s.event_purchases(e.id, 2).await.unwrap().len(), 2);
}

async fn a_failing_write_does_not_disturb_concurrent_ones<S: Store + Clone>(s: &S) {
    // SQLite group-commits concurrent writes in one transaction; a write that fails (here a
    // foreign key to an event that does not exist) must fail alone.
    let e = s.create_event(&spec(10, 4)).await.unwrap();
    let job = stamping(shards_of(s, &[e.id]).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40u64 {
        let s = s.clone();
        let event = if i % 2 == 0 { e.id } else { EventId(999_999) };
        let j = job(event, &format!("b{i}"), 1, i);
        tasks.spawn(async move { (i, j.job.purchase_id, s.record_pending(&j).await) });
    }
    while let Some(r) = tasks.join_next().await {
        let (i, id, result) = r.unwrap();
        if i % 2 == 0 {
            result.unwrap();
            assert!(s.purchase(id).await.unwrap().is_some());
        } else {
            let err = result.unwrap_err();
            assert!(
                !err.is_transient(),
                "a broken reference is permanent: {err}"
            );
            assert!(s.purchase(id).await.unwrap().is_none());
        }
    }
    assert_eq!(s.event_purchases(e.id, 100).await.unwrap().len(), 20);
}

async fn readiness_answers<S: Store>(s: &S) {
    s.check_ready().await.unwrap();
}

#[tokio::test]
async fn sqlite_keeps_everything_across_reopen_and_enforces_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let id = {
        let s = SqliteStore::open(&path).await.unwrap();
        let e = s.create_event(&spec(3, 4)).await.unwrap();
        s.decide_batch(&[job(e.id, "a", 2, 0)]).await.unwrap();
        e.id
    };
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.event(id).await.unwrap().unwrap().sold, 2);

    // The CHECK constraints hold even against a caller that bypasses the rules.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let over = raw.execute("UPDATE events SET sold = tickets + 1 WHERE id = ?1", [id.0]);
    assert!(over.is_err(), "sold > tickets must be refused by the store");
    let over_limit = raw.execute(
        "UPDATE buyer_totals SET confirmed = max_per_buyer + 1 WHERE event_id = ?1",
        [id.0],
    );
    assert!(
        over_limit.is_err(),
        "a buyer over the limit must be refused"
    );
}

/// The pending rows on record, as another process reading the file sees them.
fn pending_on_record(path: &std::path::Path) -> Vec<(String, i64)> {
    let raw = rusqlite::Connection::open(path).unwrap();
    let mut st = raw
        .prepare("SELECT id, position FROM purchases WHERE status = 'pending' ORDER BY position")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_held_pending_rows_go_on_record_when_old_or_at_stop_and_never_when_decided() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = SqliteStore::open_with(&path, PendingRows::InMemory)
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let writing = tokio::spawn({
        let (s, stop) = (s.clone(), stop.clone());
        async move { s.write_held_rows(Default::default(), stop).await }
    });
    let e = s.create_event(&spec(10, 4)).await.unwrap();

    // A minted id is held: pending to readers of this store, not yet in the file.
    let held = job(e.id, "a", 1, 0);
    s.record_pending(&held).await.unwrap();
    let p = s.purchase(held.job.purchase_id).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.position),
        (PurchaseStatus::Pending, Position(0))
    );
    assert!(pending_on_record(&path).is_empty());

    // So is one from an Idempotency-Key that is not on record.
    let keyed = keyed_job(e.id, "b", 1, 1);
    assert_eq!(s.record_pending(&keyed).await.unwrap(), Position(1));
    assert!(pending_on_record(&path).is_empty());

    // A decided purchase is released, never written as pending.
    let decided = job(e.id, "c", 1, 2);
    s.record_pending(&decided).await.unwrap();
    s.decide_batch(std::slice::from_ref(&decided))
        .await
        .unwrap();

    // Held past the flush age, the undecided one goes on record by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pending_on_record(&path).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "a held pending row was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        pending_on_record(&path),
        [
            (held.job.purchase_id.to_string(), 0),
            (keyed.job.purchase_id.to_string(), 1)
        ]
    );
    let p = s.purchase(decided.job.purchase_id).await.unwrap().unwrap();
    assert_eq!(p.status, PurchaseStatus::Confirmed);

    // A key used long ago (past the queue's dedup window) and queued again: the first position
    // on record stands, and nothing new is held.
    let old_key = keyed_job(e.id, "g", 1, 5);
    s.decide_batch(std::slice::from_ref(&old_key))
        .await
        .unwrap();
    assert_eq!(
        s.record_pending(&requeued(&old_key, 99)).await.unwrap(),
        Position(5)
    );

    // A clean stop writes what is held at once.
    let last = job(e.id, "d", 1, 3);
    s.record_pending(&last).await.unwrap();
    stop.cancel();
    writing.await.unwrap();
    assert_eq!(s.held_pending(), 0, "nothing is left held");

    // A decided purchase is released, not written again; a row that can never be written (no
    // such event) fails alone and is not kept.
    let decided_late = job(e.id, "f", 1, 4);
    s.record_pending(&decided_late).await.unwrap();
    s.record_pending(&job(EventId(999_999), "e", 1, 0))
        .await
        .unwrap();
    assert_eq!(s.held_pending(), 2);
    s.decide_batch(std::slice::from_ref(&decided_late))
        .await
        .unwrap();
    assert_eq!(s.held_pending(), 1);
    assert_eq!(s.flush_pending().await.unwrap(), 0);
    assert_eq!(s.held_pending(), 0);

    // A reopened store shows the row written at stop, pending.
    drop(s);
    let s = SqliteStore::open(&path).await.unwrap();
    let p = s.purchase(last.job.purchase_id).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.position),
        (PurchaseStatus::Pending, Position(3))
    );

    // Reopened holding pending rows, the store knows what was on record before: the old key's
    // first position still stands.
    drop(s);
    let s = SqliteStore::open_with(&path, PendingRows::InMemory)
        .await
        .unwrap();
    assert_eq!(
        s.record_pending(&requeued(&old_key, 120)).await.unwrap(),
        Position(5)
    );
    let fresh_key = keyed_job(e.id, "h", 1, 121);
    assert_eq!(s.record_pending(&fresh_key).await.unwrap(), Position(121));
    assert_eq!(s.flush_pending().await.unwrap(), 1);
}

#[tokio::test]
async fn postgres_keeps_everything_across_reconnect_and_enforces_inventory() {
    let Ok(url) = std::env::var("TICKET_TEST_POSTGRES_URL") else {
        eprintln!("skipped: TICKET_TEST_POSTGRES_URL is not set (PostgreSQL store tests)");
        return;
    };
    let schema = format!("tk_test_{}", uuid::Uuid::new_v4().simple());
    let s = PostgresStore::connect_in_schema(&url, &schema, 2)
        .await
        .unwrap();
    let e = s.create_event(&spec(3, 4)).await.unwrap();
    s.decide_batch(&[job(e.id, "a", 2, 0)]).await.unwrap();
    // Migrations run again on a second open and keep the data.
    let s2 = PostgresStore::connect_in_schema(&url, &schema, 2)
        .await
        .unwrap();
    assert_eq!(s2.event(e.id).await.unwrap().unwrap().sold, 2);

    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .unwrap();
    let over = client
        .execute(
            "UPDATE events SET sold = tickets + 1 WHERE id = $1",
            &[&e.id.0],
        )
        .await;
    assert!(over.is_err(), "sold > tickets must be refused by the store");
    let over_limit = client
        .execute(
            "UPDATE buyer_totals SET confirmed = max_per_buyer + 1 WHERE event_id = $1",
            &[&e.id.0],
        )
        .await;
    assert!(
        over_limit.is_err(),
        "a buyer over the limit must be refused"
    );
    drop(client);
    let _ = conn.await;
    s.drop_schema().await.unwrap();
}
