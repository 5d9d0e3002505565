//! Consumer groups across a failover, on the three-broker cluster of `cluster.rs`: acked
//! deliveries are never handed out again, an ordered group keeps each key's order, a record
//! that used its attempts before the failover is dead-lettered after it, and every record is
//! still delivered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use broker::client::Consumer;
use broker::protocol::{AckStatus, Delivery, FetchMode, NackStatus, Record};
use tokio::time::Instant;

use super::{TOPIC, TestCluster, client, create_topic};

const RECORDS: usize = 300;
const KEYS: usize = 6;

/// A consumer of `group` through the bootstrap list (so of whoever leads now).
pub(super) async fn consumer(
    c: &TestCluster,
    topic: &str,
    group: &str,
    mode: FetchMode,
) -> Consumer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) = client(&c.bootstrap(), Duration::from_secs(2)).await {
            return Consumer::new(client, topic, group, mode)
                .max_records(25)
                .wait(Duration::from_millis(300))
                .lease(Duration::from_secs(30))
                .max_attempts(2);
        }
        assert!(Instant::now() < deadline, "no broker answers within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fetches once and acknowledges what came; returns it. `None` if either failed (a failover).
pub(super) async fn fetch_and_ack(con: &Consumer) -> Option<Vec<Delivery>> {
    let got = con.fetch().await.ok()?;
    let ids: Vec<u64> = got.iter().map(|d| d.delivery_id).collect();
    if ids.is_empty() {
        return Some(got);
    }
    let statuses = con.ack(&ids).await.ok()?;
    assert!(
        statuses.iter().all(|s| *s == AckStatus::Acked),
        "acks of fresh deliveries: {statuses:?}"
    );
    Some(got)
}

fn key_seq(d: &Delivery) -> Option<(usize, usize)> {
    let payload = std::str::from_utf8(&d.record.payload).ok()?;
    let (k, s) = payload.strip_prefix('k')?.split_once('-')?;
    Some((k.parse().ok()?, s.parse().ok()?))
}

/// Consumes (and acks) everything left of `group` through whoever leads; returns it.
pub(super) async fn drain(
    c: &TestCluster,
    group: &str,
    mode: FetchMode,
    done: usize,
) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: Vec<Delivery> = Vec::new();
    let mut con = consumer(c, TOPIC, group, mode).await;
    let mut idle = 0;
    while idle < 3 {
        assert!(
            Instant::now() < deadline,
            "{group}: only {} more records within 30 s ({done} done before)",
            got.len()
        );
        match fetch_and_ack(&con).await {
            Some(batch) if batch.is_empty() => idle += 1,
            Some(batch) => {
                idle = 0;
                got.extend(batch);
            }
            None => con = consumer(c, TOPIC, group, mode).await,
        }
    }
    got
}

/// No delivery in `rest` is of a record in `acked` (acknowledged before a failover).
pub(super) fn assert_none_again(rest: &[Delivery], acked: &BTreeSet<(u32, u64)>) {
    let again: Vec<(u32, u64)> = rest
        .iter()
        .map(|d| (d.partition, d.offset))
        .filter(|po| acked.contains(po))
        .collect();
    assert!(
        again.is_empty(),
        "acknowledged before the failover and delivered again: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_keep_their_progress_across_a_failover() {
    let mut c = TestCluster::start().await;
    create_topic(&c).await;
    let leader = c.leader().await;
    let producer = client(&c.bootstrap(), Duration::from_secs(2))
        .await
        .unwrap();
    for i in 0..RECORDS {
        let (key, seq) = (i % KEYS, i / KEYS);
        producer
            .produce(
                TOPIC,
                Record::new(format!("k{key}-{seq}"))
                    .with_key(format!("k{key}"))
                    .with_dedup_id(format!("r{i}")),
            )
            .await
            .unwrap();
    }
    // Shared: half acked, a batch held (in flight at the failover).
    let shared = consumer(&c, TOPIC, "shared", FetchMode::Shared).await;
    let mut acked: BTreeSet<(u32, u64)> = BTreeSet::new();
    while acked.len() < RECORDS / 2 {
        let batch = fetch_and_ack(&shared).await.expect("no failover yet");
        acked.extend(batch.iter().map(|d| (d.partition, d.offset)));
    }
    let held = shared.fetch().await.unwrap();
    assert!(!held.is_empty());
    // Ordered: a third consumed in order, every batch acked.
    let ordered = consumer(&c, TOPIC, "ordered", FetchMode::Ordered).await;
    let mut in_order: Vec<Delivery> = Vec::new();
    while in_order.len() < RECORDS / 3 {
        in_order.extend(fetch_and_ack(&ordered).await.expect("no failover yet"));
    }
    // Dead letters: a record delivered twice (its two attempts) and held at the failover.
    let dl = consumer(&c, TOPIC, "dl", FetchMode::Shared)
        .await
        .max_records(1);
    let first = dl.fetch().await.unwrap();
    assert_eq!(first.len(), 1);
    let statuses = dl
        .nack(&[first[0].delivery_id], Duration::ZERO, "failed once")
        .await
        .unwrap();
    assert_eq!(statuses, vec![NackStatus::Requeued]);
    let second = dl.fetch().await.unwrap();
    assert_eq!(
        (second[0].partition, second[0].offset, second[0].attempt),
        (first[0].partition, first[0].offset, 2)
    );

    c.kill(leader).await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);

    // Shared: nothing acked comes again; everything else does, the held batch included.
    let rest = drain(&c, "shared", FetchMode::Shared, acked.len()).await;
    assert_none_again(&rest, &acked);
    let all: BTreeSet<(u32, u64)> = acked
        .iter()
        .copied()
        .chain(rest.iter().map(|d| (d.partition, d.offset)))
        .collect();
    for d in &held {
        assert!(
            rest.iter()
                .any(|r| (r.partition, r.offset) == (d.partition, d.offset)),
            "a delivery in flight at the failover was not delivered again"
        );
    }
    // Ordered: the sequences of each key go on where they stopped, with no gap and no repeat.
    in_order.extend(drain(&c, "ordered", FetchMode::Ordered, in_order.len()).await);
    let mut seqs: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for d in &in_order {
        if let Some((k, s)) = key_seq(d) {
            seqs.entry(k).or_default().push(s);
        }
    }
    for (k, s) in &seqs {
        let expected: Vec<usize> = (0..RECORDS / KEYS).collect();
        assert_eq!(s, &expected, "key k{k} in the ordered group");
    }
    // Dead letters: the record that used its attempts before the failover is moved to the
    // dead-letter topic by the new leader.
    let dlq = consumer(&c, &format!("{TOPIC}.dlq"), "inspect", FetchMode::Shared).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let got = dlq.fetch().await.unwrap_or_default();
        if let Some(d) = got
            .into_iter()
            .find(|d| d.record.header("x-dlq-group").map(|g| g.as_ref() == b"dl") == Some(true))
        {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "nothing dead-lettered within 10 s"
        );
    };
    assert_eq!(
        dead.record.header("x-dlq-offset").unwrap().as_ref(),
        first[0].offset.to_string().as_bytes()
    );
    assert_eq!(dead.record.payload, first[0].record.payload);

    // The old leader comes back as a follower; every record of the topic was delivered once
    // to the shared group, probes of `leader()` included.
    c.spawn(leader).await;
    let total: u64 = {
        let stats = producer_stats(&c).await;
        stats["topics"][0]["partition_stats"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["log_end_offset"].as_u64())
            .sum()
    };
    assert_eq!(
        all.len() as u64,
        total,
        "every record delivered to the shared group"
    );
    c.stop_all().await;
}

async fn producer_stats(c: &TestCluster) -> serde_json::Value {
    let client = client(&c.bootstrap(), Duration::from_secs(2))
        .await
        .unwrap();
    client.stats(TOPIC).await.unwrap()
}

/// What a consumer saw through a run of faults.
pub(super) struct Consumed {
    /// Every record delivered at least once.
    pub delivered: HashSet<(u32, u64)>,
    /// Each record whose acknowledgement was answered, and when (an acknowledgement whose
    /// answer was lost in a failover may have taken effect too: it is not here).
    pub acked: HashMap<(u32, u64), Instant>,
    /// Deliveries of a record whose acknowledgement had been answered before the fetch.
    pub redelivered_after_ack: Vec<(u32, u64)>,
}

/// A consumer of group `chaos` that fetches and acknowledges through whoever leads, across
/// kills and cut links, until `stop` and then until nothing more comes.
pub(super) fn consume(
    bootstrap: String,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Consumed> {
    tokio::spawn(async move {
        let mut seen = Consumed {
            delivered: HashSet::new(),
            acked: HashMap::new(),
            redelivered_after_ack: Vec::new(),
        };
        let mut con: Option<Consumer> = None;
        let mut idle = 0;
        while !(stop.is_cancelled() && idle >= 3) {
            let c = match con.as_ref().filter(|c| !c.client().is_closed()) {
                Some(c) => c.clone(),
                None => match client(&bootstrap, Duration::from_secs(2)).await {
                    Ok(client) => {
                        let c = Consumer::new(client, TOPIC, "chaos", FetchMode::Shared)
                            .max_records(50)
                            .wait(Duration::from_millis(300))
                            .lease(Duration::from_secs(5));
                        con = Some(c.clone());
                        c
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let asked = Instant::now();
            let Ok(got) = c.fetch().await else {
                con = None;
                continue;
            };
            if got.is_empty() {
                if stop.is_cancelled() {
                    idle += 1;
                }
                continue;
            }
            idle = 0;
            for d in &got {
                seen.delivered.insert((d.partition, d.offset));
                if seen
                    .acked
                    .get(&(d.partition, d.offset))
                    .is_some_and(|at| *at < asked)
                {
                    seen.redelivered_after_ack.push((d.partition, d.offset));
                }
            }
            let ids: Vec<u64> = got.iter().map(|d| d.delivery_id).collect();
            match c.ack(&ids).await {
                Ok(statuses) => {
                    let now = Instant::now();
                    for (d, s) in got.iter().zip(statuses) {
                        if s == AckStatus::Acked {
                            seen.acked.entry((d.partition, d.offset)).or_insert(now);
                        }
                    }
                }
                Err(_) => con = None,
            }
        }
        seen
    })
}
