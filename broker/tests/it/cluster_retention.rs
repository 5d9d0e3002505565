//! Retention in the three-broker cluster of `cluster.rs`: every broker deletes the front of its
//! own log below the commit point it knows, and a broker whose log ends below what the
//! leader's retention deleted (one that was down, or one that joins on a new disk) starts its
//! log again at the leader's start and catches up from there.

use std::time::Duration;

use broker::protocol::Record;
use tokio::time::Instant;

use super::join::wait_joined;
use super::{
    PARTITIONS, TOPIC, TestCluster, check_retained_logs, client, client_of, create_topic, produce,
    read_logs,
};

/// Small segments and little retention, checked often, so that a few MiB roll and delete them.
const RETENTION: [&str; 6] = [
    "--segment-bytes",
    "64KiB",
    "--retention-bytes",
    "256KiB",
    "--retention-check-interval",
    "100ms",
];

/// Produces about `bytes` of 4 KiB records through whoever leads, sending a batch again
/// after a failure.
async fn fill(c: &TestCluster, bytes: usize) {
    const RECORD: usize = 4096;
    let payload = bytes::Bytes::from(vec![b'x'; RECORD]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut batch_no = 0u64;
    let mut left = bytes;
    while left > 0 {
        assert!(Instant::now() < deadline, "filler not produced within 30 s");
        let Ok(client) = client(&c.bootstrap(), Duration::from_secs(2)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        batch_no += 1;
        let records: Vec<Record> = (0..16)
            .map(|i| {
                Record::new(payload.clone())
                    .with_key(format!("f{i}"))
                    .with_dedup_id(format!("fill-{bytes}-{batch_no}-{i}"))
            })
            .collect();
        if client.produce_batch(TOPIC, records).await.is_ok() {
            left = left.saturating_sub(16 * RECORD);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The first retained offset of each partition at broker `id`.
async fn starts(c: &TestCluster, id: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) = client_of(c.nodes[&id].listen).await
            && let Ok(stats) = client.stats(TOPIC).await
            && let Some(parts) = stats["topics"][0]["partition_stats"].as_array()
        {
            let starts: Vec<u64> = parts
                .iter()
                .filter_map(|p| p["start_offset"].as_u64())
                .collect();
            assert_eq!(starts.len(), PARTITIONS as usize, "stats: {stats}");
            return starts;
        }
        assert!(Instant::now() < deadline, "node {id} gave no stats in 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fills the log until broker `id`'s retention deleted everything below `above` (per
/// partition).
async fn fill_until_deleted(c: &TestCluster, id: u64, above: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = starts(c, id).await;
        if now.iter().zip(above).all(|(s, a)| s > a) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}'s retention did not pass {above:?} within 60 s: it starts at {now:?}"
        );
        fill(c, 256 * 1024).await;
    }
}

/// The end of each partition's log on a stopped broker's disk.
fn ends_on_disk(c: &TestCluster, id: u64) -> Vec<u64> {
    read_logs(&c.nodes[&id].dir)
        .iter()
        .map(|rs| rs.last().map_or(0, |r| r.offset + 1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_retention_starts_its_log_again_there() {
    let mut c = TestCluster::start_with(&RETENTION).await;
    create_topic(&c).await;
    let leader = c.leader().await;
    let mut others = c.nodes.keys().copied().filter(|id| *id != leader);
    let (a, f) = (others.next().unwrap(), others.next().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = produce(c.bootstrap(), 2, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.kill(f).await;
    let behind = ends_on_disk(&c, f);
    fill_until_deleted(&c, leader, &behind).await;
    c.spawn(f).await;
    fill(&c, 64 * 1024).await;
    stop.cancel();
    let acked = producing.await.unwrap();
    c.wait_caught_up().await;
    // F started again past where it stopped; A, a follower all along, applied retention too.
    let f_starts = starts(&c, f).await;
    assert!(
        f_starts.iter().zip(&behind).all(|(s, b)| s > b),
        "node {f} starts at {f_starts:?}, not past its old ends {behind:?}"
    );
    let a_starts = starts(&c, a).await;
    assert!(
        a_starts.iter().all(|s| *s > 0),
        "follower {a} deleted nothing: it starts at {a_starts:?}"
    );
    c.stop_all().await;
    let log = std::fs::read_to_string(c.nodes[&f].dir.with_extension("log")).unwrap();
    assert!(
        log.contains("started the log again at the leader's start"),
        "node {f} did not log its restart"
    );
    check_retained_logs(&c.logs(), &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_a_new_disk_joins_after_retention_deleted_the_logs_start() {
    let mut c = TestCluster::start_with(&RETENTION).await;
    create_topic(&c).await;
    let leader = c.leader().await;
    let f = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = produce(c.bootstrap(), 2, stop.clone());
    fill_until_deleted(&c, leader, &[0; PARTITIONS as usize]).await;
    c.kill(f).await;
    std::fs::remove_dir_all(&c.nodes[&f].dir).unwrap();
    c.spawn_with(f, &["--join"]).await;
    wait_joined(&c, f).await;
    // F counts towards a majority now: with the leader lost, it and the third carry on.
    c.kill(leader).await;
    let next = c.leader().await;
    assert_ne!(next, leader);
    fill(&c, 64 * 1024).await;
    stop.cancel();
    let acked = producing.await.unwrap();
    c.spawn(leader).await;
    c.wait_caught_up().await;
    c.stop_all().await;
    check_retained_logs(&c.logs(), &acked);
}
