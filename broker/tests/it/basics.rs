use std::collections::HashMap;
use std::time::Duration;

use broker::protocol::{FetchMode, Record};
use broker::testing::TestBroker;
use plumbing::testing::http_get;

use crate::{consumer, fetch_n};

#[tokio::test]
async fn produce_then_consume_keeps_per_key_order() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    assert!(c.create_topic("jobs", 4).await.unwrap());
    assert!(
        !c.create_topic("jobs", 4).await.unwrap(),
        "second create is a no-op"
    );
    let mut records = Vec::new();
    for i in 0..200u32 {
        records.push(
            Record::new(format!("{i}"))
                .with_key(format!("key-{}", i % 7))
                .with_header("n", i.to_string()),
        );
    }
    let acks = c.produce_batch("jobs", records).await.unwrap();
    assert_eq!(acks.len(), 200);
    // Same key, same partition, increasing offsets.
    let mut by_key: HashMap<u32, (u32, u64)> = HashMap::new();
    for (i, a) in acks.iter().enumerate() {
        let k = i as u32 % 7;
        if let Some((p, o)) = by_key.insert(k, (a.partition, a.offset)) {
            assert_eq!(p, a.partition);
            assert!(a.offset > o);
        }
    }
    let con = consumer(&c, "jobs", "g", FetchMode::Shared).max_records(1000);
    let got = fetch_n(&con, 200, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 200);
    let mut last: HashMap<String, u32> = HashMap::new();
    for d in &got {
        let n: u32 = std::str::from_utf8(&d.record.payload)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            d.record.header("n").unwrap().as_ref(),
            n.to_string().as_bytes()
        );
        let key = String::from_utf8(d.record.key.clone().unwrap().to_vec()).unwrap();
        if let Some(prev) = last.insert(key, n) {
            assert!(n > prev, "per-key order kept");
        }
        assert_eq!(d.attempt, 1);
    }
    let ids: Vec<u64> = got.iter().map(|d| d.delivery_id).collect();
    let statuses = con.ack(&ids).await.unwrap();
    assert!(
        statuses
            .iter()
            .all(|s| *s == broker::protocol::AckStatus::Acked)
    );
    let stats = c.stats("jobs").await.unwrap();
    assert_eq!(stats["topics"][0]["groups"][0]["lag"], 0);
    assert_eq!(stats["topics"][0]["end_offset"], 200);
}

#[tokio::test]
async fn a_repeated_dedup_id_returns_the_first_offset() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("p", 3).await.unwrap();
    let first = c
        .produce(
            "p",
            Record::new("a")
                .with_key("ev1")
                .with_dedup_id("buyer-1:key-9"),
        )
        .await
        .unwrap();
    let other = c
        .produce("p", Record::new("b").with_key("ev1"))
        .await
        .unwrap();
    let again = c
        .produce(
            "p",
            Record::new("a")
                .with_key("ev1")
                .with_dedup_id("buyer-1:key-9"),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset),
        (first.partition, first.offset)
    );
    assert_ne!(other.offset, first.offset);
    // Within one batch too.
    let batch = c
        .produce_batch(
            "p",
            vec![
                Record::new("x").with_key("ev2").with_dedup_id("d2"),
                Record::new("x").with_key("ev2").with_dedup_id("d2"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(batch[0].offset, batch[1].offset);
    assert!(batch[1].duplicate);
    // And across a restart: the window is rebuilt from the log.
    let dir = b.stop().await;
    let b = TestBroker::start_in(dir, |_| {}).await;
    let c = b.client().await.unwrap();
    let after = c
        .produce(
            "p",
            Record::new("a")
                .with_key("ev1")
                .with_dedup_id("buyer-1:key-9"),
        )
        .await
        .unwrap();
    assert!(after.duplicate);
    assert_eq!(after.offset, first.offset);
}

#[tokio::test]
async fn unknown_topics_and_bad_names_are_errors() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    let err = c.produce("nope", Record::new("x")).await.unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(broker::protocol::ErrorCode::UnknownTopic)
    );
    let err = c.create_topic("a/b", 1).await.unwrap_err();
    assert!(err.to_string().contains("bad topic name"), "{err}");
    let err = c.create_topic("ok", 0).await.unwrap_err();
    assert!(err.to_string().contains("partitions"), "{err}");
}

#[tokio::test]
async fn acked_progress_survives_a_restart_and_only_unacked_is_redelivered() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    let recs = (0..10).map(|i| Record::new(format!("{i}"))).collect();
    c.produce_batch("t", recs).await.unwrap();
    let con = consumer(&c, "t", "g", FetchMode::Shared).max_records(10);
    let got = fetch_n(&con, 10, Duration::from_secs(5)).await;
    let acked: Vec<u64> = got
        .iter()
        .filter(|d| d.offset % 3 != 0)
        .map(|d| d.delivery_id)
        .collect();
    con.ack(&acked).await.unwrap();
    drop((con, c));
    let dir = b.stop().await;
    let b = TestBroker::start_in(dir, |_| {}).await;
    let c = b.client().await.unwrap();
    let con = consumer(&c, "t", "g", FetchMode::Shared).max_records(100);
    let again = fetch_n(&con, 4, Duration::from_secs(5)).await;
    let mut offsets: Vec<u64> = again.iter().map(|d| d.offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, vec![0, 3, 6, 9]);
    assert!(
        con.fetch().await.unwrap().is_empty(),
        "nothing else comes back"
    );
}

#[tokio::test]
async fn metrics_endpoint_exports_the_documented_families() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("m", 2).await.unwrap();
    c.produce("m", Record::new("x")).await.unwrap();
    let con = consumer(&c, "m", "g", FetchMode::Shared);
    let _ = fetch_n(&con, 1, Duration::from_secs(2)).await;
    let addr = b.metrics_addr.unwrap();
    let body = http_get(addr, "/metrics").await.unwrap().body;
    for name in [
        "broker_requests_total",
        "broker_request_duration_seconds_bucket",
        "broker_fsync_duration_seconds_bucket",
        "broker_partition_end_offset",
        "broker_partition_bytes",
        "broker_group_committed_offset",
        "broker_group_lag",
        "broker_group_in_flight",
        "broker_group_redeliveries_total",
        "broker_group_dead_letters_total",
        "broker_connections",
    ] {
        assert!(body.contains(name), "missing {name} in\n{body}");
    }
    assert!(
        http_get(addr, "/healthz")
            .await
            .unwrap()
            .body
            .contains("ok")
    );
}

#[tokio::test]
async fn retention_deletes_only_what_every_group_has_finished() {
    let b = TestBroker::start_with(|c| {
        c.segment_bytes = 4096;
        c.retention_check_interval = Duration::from_millis(100);
    })
    .await;
    let c = b.client().await.unwrap();
    c.create_topic_with("r", 1, 8192, 0).await.unwrap();
    let con = consumer(&c, "r", "g", FetchMode::Shared).max_records(1000);
    let _ = con.fetch().await.unwrap();
    // Ten records per produce: a batch never straddles segments, so this fills many.
    for chunk in 0..40 {
        let recs = (chunk * 10..chunk * 10 + 10)
            .map(|i| Record::new(format!("record-{i:04}-{}", "x".repeat(60))))
            .collect();
        c.produce_batch("r", recs).await.unwrap();
    }
    let start_offset = |stats: &serde_json::Value| {
        stats["topics"][0]["partition_stats"][0]["start_offset"]
            .as_u64()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        start_offset(&c.stats("r").await.unwrap()),
        0,
        "group g has consumed nothing: nothing deleted"
    );
    let got = fetch_n(&con, 400, Duration::from_secs(5)).await;
    let ids: Vec<u64> = got
        .iter()
        .filter(|d| d.offset < 300)
        .map(|d| d.delivery_id)
        .collect();
    con.ack(&ids).await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut start = 0;
    while tokio::time::Instant::now() < end {
        start = start_offset(&c.stats("r").await.unwrap());
        if start > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        start > 0,
        "over the size limit and consumed: old segments go"
    );
    assert!(
        start <= 300,
        "never past what the group finished (start {start})"
    );
    let stats = c.stats("r").await.unwrap();
    let bytes = stats["topics"][0]["partition_stats"][0]["bytes"]
        .as_u64()
        .unwrap();
    assert!(bytes < 400 * 90, "bytes shrank to {bytes}");
    // The unfinished records are still deliverable after a restart.
    drop((con, c));
    let dir = b.stop().await;
    let b = TestBroker::start_in(dir, |c| c.segment_bytes = 4096).await;
    let c = b.client().await.unwrap();
    let con = consumer(&c, "r", "g", FetchMode::Shared).max_records(1000);
    let again = fetch_n(&con, 100, Duration::from_secs(5)).await;
    let mut offsets: Vec<u64> = again.iter().map(|d| d.offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (300..400).collect::<Vec<u64>>());
}
