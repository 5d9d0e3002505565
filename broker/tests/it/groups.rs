use std::time::Duration;

use broker::protocol::{FetchMode, NackStatus, Record};
use broker::testing::TestBroker;

use crate::{consumer, fetch_n};

#[tokio::test]
async fn shared_mode_redelivers_after_the_lease_expires() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    c.produce("t", Record::new("job")).await.unwrap();
    let con = consumer(&c, "t", "g", FetchMode::Shared).lease(Duration::from_millis(300));
    let first = fetch_n(&con, 1, Duration::from_secs(2)).await;
    assert_eq!(first[0].attempt, 1);
    // Not acked: after the lease it comes back, as attempt 2.
    let again = fetch_n(&con, 1, Duration::from_secs(3)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].offset, first[0].offset);
    assert_eq!(again[0].attempt, 2);
}

#[tokio::test]
async fn shared_mode_redelivers_when_the_consumer_disconnects() {
    let b = TestBroker::start().await;
    let c1 = b.client().await.unwrap();
    c1.create_topic("t", 1).await.unwrap();
    c1.produce("t", Record::new("job")).await.unwrap();
    let con1 = consumer(&c1, "t", "g", FetchMode::Shared);
    assert_eq!(fetch_n(&con1, 1, Duration::from_secs(2)).await.len(), 1);
    drop((con1, c1));
    let c2 = b.client().await.unwrap();
    let con2 = consumer(&c2, "t", "g", FetchMode::Shared);
    let got = fetch_n(&con2, 1, Duration::from_secs(3)).await;
    assert_eq!(
        got.len(),
        1,
        "the dead consumer's delivery went to the next one"
    );
    assert_eq!(got[0].attempt, 2);
}

#[tokio::test]
async fn nack_waits_for_its_delay_then_dead_letters_after_max_attempts() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    c.produce("t", Record::new("poison").with_key("k"))
        .await
        .unwrap();
    let con = consumer(&c, "t", "g", FetchMode::Shared).max_attempts(3);
    let mut last_nack: Option<tokio::time::Instant> = None;
    for attempt in 1..=3u32 {
        let got = fetch_n(&con, 1, Duration::from_secs(3)).await;
        assert_eq!(got.len(), 1);
        if let Some(t) = last_nack {
            // The broker keeps time in whole milliseconds, so allow for one of rounding.
            assert!(
                t.elapsed() >= Duration::from_millis(149),
                "the nack delay was respected: redelivered after {:?}",
                t.elapsed()
            );
        }
        assert_eq!(got[0].attempt, attempt);
        // Taken before the nack is sent: the broker starts the delay when it handles it, later.
        let sent = tokio::time::Instant::now();
        let status = con
            .nack(
                &[got[0].delivery_id],
                Duration::from_millis(150),
                "cannot sell",
            )
            .await
            .unwrap();
        last_nack = Some(sent);
        let expected = if attempt < 3 {
            NackStatus::Requeued
        } else {
            NackStatus::DeadLettered
        };
        assert_eq!(status, vec![expected]);
    }
    // The record is in t.dlq with its reason, and no longer in t.
    let dlq = consumer(&c, "t.dlq", "inspect", FetchMode::Shared);
    let dead = fetch_n(&dlq, 1, Duration::from_secs(3)).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.record.payload.as_ref(), b"poison");
    assert_eq!(d.record.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(
        d.record.header("x-dlq-reason").unwrap().as_ref(),
        b"cannot sell"
    );
    assert_eq!(d.record.header("x-dlq-group").unwrap().as_ref(), b"g");
    assert_eq!(d.record.header("x-dlq-attempts").unwrap().as_ref(), b"3");
    assert!(con.fetch().await.unwrap().is_empty());
    let stats = c.stats("t").await.unwrap();
    assert_eq!(stats["topics"][0]["groups"][0]["lag"], 0);
    assert_eq!(stats["topics"][0]["groups"][0]["dead_letters"], 1);
}

#[tokio::test]
async fn ordered_mode_keeps_order_and_hands_over_when_a_member_dies() {
    let b = TestBroker::start().await;
    let c1 = b.client().await.unwrap();
    c1.create_topic("o", 1).await.unwrap();
    let recs = (0..20)
        .map(|i| Record::new(format!("{i}")).with_key("e"))
        .collect();
    c1.produce_batch("o", recs).await.unwrap();
    let con1 = consumer(&c1, "o", "w", FetchMode::Ordered).max_records(5);
    let c2 = b.client().await.unwrap();
    let con2 = consumer(&c2, "o", "w", FetchMode::Ordered).max_records(5);
    let a = fetch_n(&con1, 5, Duration::from_secs(2)).await;
    assert_eq!(
        a.iter().map(|d| d.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(
        con2.fetch().await.unwrap().is_empty(),
        "the partition is con1's"
    );
    con1.ack(&[a[0].delivery_id, a[1].delivery_id])
        .await
        .unwrap();
    // con1 dies holding 2, 3, 4: con2 takes the partition and resumes at 2, in order.
    drop((con1, c1));
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 18 && tokio::time::Instant::now() < end {
        let got = con2.fetch().await.unwrap();
        let ids: Vec<u64> = got.iter().map(|d| d.delivery_id).collect();
        seen.extend(got.iter().map(|d| d.offset));
        if !ids.is_empty() {
            con2.ack(&ids).await.unwrap();
        }
    }
    assert_eq!(seen, (2..20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn ordered_mode_failure_rewinds_to_the_failed_record() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("o", 1).await.unwrap();
    let recs = (0..5).map(|i| Record::new(format!("{i}"))).collect();
    c.produce_batch("o", recs).await.unwrap();
    let con = consumer(&c, "o", "w", FetchMode::Ordered).max_records(5);
    let a = fetch_n(&con, 5, Duration::from_secs(2)).await;
    con.ack(&[a[0].delivery_id]).await.unwrap();
    con.nack(&[a[1].delivery_id], Duration::from_millis(50), "db busy")
        .await
        .unwrap();
    let b2 = fetch_n(&con, 4, Duration::from_secs(2)).await;
    assert_eq!(
        b2.iter().map(|d| d.offset).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(b2[0].attempt, 2);
}

#[tokio::test]
async fn a_group_mode_mismatch_is_an_error() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    consumer(&c, "t", "g", FetchMode::Shared)
        .fetch()
        .await
        .unwrap();
    let err = consumer(&c, "t", "g", FetchMode::Ordered)
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(broker::protocol::ErrorCode::GroupMismatch)
    );
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries_per_consumer() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    let recs = (0..10).map(|i| Record::new(format!("{i}"))).collect();
    c.produce_batch("t", recs).await.unwrap();
    let con = consumer(&c, "t", "g", FetchMode::Shared)
        .prefetch(3)
        .max_records(10);
    let a = con.fetch().await.unwrap();
    assert_eq!(a.len(), 3);
    assert!(con.fetch().await.unwrap().is_empty());
    con.ack(&[a[0].delivery_id]).await.unwrap();
    assert_eq!(con.fetch().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_waiting_fetch_wakes_when_a_record_arrives() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    let con = broker::client::Consumer::new(c.clone(), "t", "g", FetchMode::Shared)
        .wait(Duration::from_secs(10));
    let waiter = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let got = con.fetch().await.unwrap();
        (got.len(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.produce("t", Record::new("now")).await.unwrap();
    let (n, waited) = waiter.await.unwrap();
    assert_eq!(n, 1);
    assert!(
        waited < Duration::from_secs(5),
        "woke on arrival, not at the deadline"
    );
}
