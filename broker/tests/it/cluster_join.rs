//! A broker whose disk is lost comes back on an empty one with `--join`, on the three-broker
//! cluster of `cluster.rs`: it re-replicates every partition and copies the groups, and then
//! the cluster survives losing the leader with the rejoined broker in its majority: no
//! acknowledged record is lost and no acknowledged delivery is handed out again, even those
//! only the lost disk and the leader held.

use std::collections::BTreeSet;
use std::time::Duration;

use broker::protocol::FetchMode;
use tokio::time::Instant;

use super::groups::{assert_none_again, consumer, drain, fetch_and_ack};
use super::{TOPIC, TestCluster, check_logs, client_of, create_topic, produce};

/// Consumes and acknowledges `n` more records of group `g`, through whoever leads.
async fn ack_more(c: &TestCluster, n: usize, acked: &mut BTreeSet<(u32, u64)>) {
    let target = acked.len() + n;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut con = consumer(c, TOPIC, "g", FetchMode::Shared).await;
    while acked.len() < target {
        assert!(
            Instant::now() < deadline,
            "only {} acknowledged",
            acked.len()
        );
        match fetch_and_ack(&con).await {
            Some(batch) => acked.extend(batch.iter().map(|d| (d.partition, d.offset))),
            None => con = consumer(c, TOPIC, "g", FetchMode::Shared).await,
        }
    }
}

/// Waits until node `id` says its join is over.
pub(super) async fn wait_joined(c: &TestCluster, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = client_of(c.nodes[&id].listen).await
            && let Ok(stats) = client.stats("").await
            && stats["cluster"]["joining"] == false
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} did not finish joining within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_a_new_disk_rejoins_and_holds_what_the_lost_one_held() {
    let mut c = TestCluster::start().await;
    create_topic(&c).await;
    let leader = c.leader().await;
    let mut others = c.nodes.keys().copied().filter(|id| *id != leader);
    let (a, f) = (others.next().unwrap(), others.next().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = produce(c.bootstrap(), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acked = BTreeSet::new();
    ack_more(&c, 100, &mut acked).await;
    // With A down, progress is held by the leader and F alone; A comes back without it.
    c.kill(a).await;
    ack_more(&c, 100, &mut acked).await;
    c.spawn(a).await;
    // F's disk is lost: it comes back empty, with --join.
    c.kill(f).await;
    std::fs::remove_dir_all(&c.nodes[&f].dir).unwrap();
    let joined_at = Instant::now();
    c.spawn_with(f, &["--join"]).await;
    // Killed once during its join: it goes on where it was (raft/join.json).
    c.kill(f).await;
    c.spawn_with(f, &["--join"]).await;
    wait_joined(&c, f).await;
    eprintln!(
        "node {f} joined {:?} after it started on an empty disk",
        joined_at.elapsed()
    );
    // The leader is lost: A and the rejoined F must hold everything between them.
    c.kill(leader).await;
    let next = c.leader().await;
    assert_ne!(next, leader);
    stop.cancel();
    let acked_records = producing.await.unwrap();
    let rest = drain(&c, "g", FetchMode::Shared, acked.len()).await;
    assert_none_again(&rest, &acked);
    c.spawn(leader).await;
    c.wait_caught_up().await;
    c.stop_all().await;
    check_logs(&c.logs(), &acked_records);
}
