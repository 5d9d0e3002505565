//! Process crash tests: the real `broker` binary, SIGKILLed mid-stream, restarted on the same
//! data directory. Nothing acknowledged may be lost, reordered or duplicated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::client::{Client, ClientConfig, Consumer};
use broker::protocol::{FetchMode, Record};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `broker serve` child process and its client address.
pub struct Proc {
    pub child: Child,
    pub addr: String,
}

/// Starts the real binary on port 0 and learns its address from its JSON log.
pub async fn spawn_broker(dir: &Path, extra: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the broker binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["fields"]["message"] == "broker serving"
            {
                return v["fields"]["listen"].as_str().map(str::to_string);
            }
        }
        None
    })
    .await
    .expect("the broker says where it listens within 20 s")
    .expect("the broker logged its address");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc { child, addr }
}

async fn connect(addr: &str) -> Client {
    let mut cfg = ClientConfig::new(addr);
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(5);
    Client::connect(cfg).await.expect("connects to the broker")
}

#[tokio::test]
async fn sigkill_mid_stream_loses_no_acknowledged_record() {
    sigkill_mid_stream(&["--fsync", "always"]).await;
}

/// Under `never` an acknowledgement means written to the OS: a killed process (not a killed
/// machine) still loses nothing.
#[tokio::test]
async fn sigkill_mid_stream_loses_no_acknowledged_record_without_fsync() {
    sigkill_mid_stream(&["--fsync", "never"]).await;
}

async fn sigkill_mid_stream(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_broker(dir.path(), flags).await;
    let acked = produce_until_killed(&mut proc, Duration::from_millis(600)).await;
    assert!(
        acked.len() > 50,
        "the load ran before the kill ({} acked)",
        acked.len()
    );
    let proc = spawn_broker(dir.path(), &[]).await;
    let lost = lost_records(&proc.addr, &acked).await;
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    drop(proc);
}

/// Acknowledged records: partition, offset, payload.
pub type Acked = Vec<(u32, u64, String)>;

/// Eight producers send batches of 1 to 4 records to a new topic `c` of 2 partitions (each
/// producer its own key) until the broker is SIGKILLed after `run_for`; returns what was
/// acknowledged.
pub async fn produce_until_killed(proc: &mut Proc, run_for: Duration) -> Acked {
    let admin = connect(&proc.addr).await;
    admin.create_topic("c", 2).await.unwrap();
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut producers = Vec::new();
    for task in 0..8u32 {
        let client = connect(&proc.addr).await;
        let acked = Arc::clone(&acked);
        producers.push(tokio::spawn(async move {
            for seq in 0..100_000u32 {
                let n = 1 + seq % 4;
                let records: Vec<Record> = (0..n)
                    .map(|i| Record::new(format!("t{task}-{seq}-{i}")).with_key(format!("t{task}")))
                    .collect();
                let payloads: Vec<String> = (0..n).map(|i| format!("t{task}-{seq}-{i}")).collect();
                match client.produce_batch("c", records).await {
                    Ok(acks) => {
                        let mut a = acked.lock().unwrap();
                        for (ack, p) in acks.into_iter().zip(payloads) {
                            a.push((ack.partition, ack.offset, p));
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(run_for).await;
    proc.child.start_kill().expect("SIGKILL is delivered");
    let _ = proc.child.wait().await;
    for p in producers {
        tokio::time::timeout(Duration::from_secs(30), p)
            .await
            .expect("producers notice the dead broker")
            .unwrap();
    }
    acked.lock().unwrap().clone()
}

/// Reads all of topic `c` from the broker at `addr` and returns the acknowledged records that
/// are not at their offset. Whatever is there must be dense, once, and in each producer's order.
pub async fn lost_records(addr: &str, acked: &Acked) -> Acked {
    let client = connect(addr).await;
    let consumer = Consumer::new(client, "c", "verify", FetchMode::Shared)
        .max_records(5000)
        .prefetch(1_000_000)
        .wait(Duration::from_millis(300));
    let mut log: BTreeMap<(u32, u64), String> = BTreeMap::new();
    loop {
        let got = consumer.fetch().await.unwrap();
        if got.is_empty() {
            break;
        }
        for d in got {
            let payload = String::from_utf8(d.record.payload.to_vec()).unwrap();
            assert!(
                log.insert((d.partition, d.offset), payload).is_none(),
                "an offset delivered twice"
            );
        }
    }
    // Offsets are dense from 0 in each partition.
    for p in 0..2u32 {
        let offsets: Vec<u64> = log
            .range((p, 0)..(p + 1, 0))
            .map(|((_, o), _)| *o)
            .collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "partition {p} is dense"
        );
    }
    // Exactly once, and each producer's records in the order it sent them.
    let mut seen: HashMap<&str, (u32, u32)> = HashMap::new();
    let mut payloads = std::collections::HashSet::new();
    for payload in log.values() {
        assert!(payloads.insert(payload.clone()), "{payload} appears twice");
        let mut parts = payload.split('-');
        let task = parts.next().unwrap();
        let seq: u32 = parts.next().unwrap().parse().unwrap();
        let i: u32 = parts.next().unwrap().parse().unwrap();
        if let Some(prev) = seen.insert(task, (seq, i)) {
            assert!((seq, i) > prev, "{task}: {prev:?} then {:?}", (seq, i));
        }
    }
    acked
        .iter()
        .filter(|(p, o, payload)| log.get(&(*p, *o)) != Some(payload))
        .cloned()
        .collect()
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_group_progress() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_broker(dir.path(), &[]).await;
    let acked = ack_until_killed(&mut proc).await;
    let proc = spawn_broker(dir.path(), &[]).await;
    check_group_progress(&proc.addr, &acked).await;
}

/// Writes 500 records to a new topic `g`, acknowledges 300 of them in group `workers` (never
/// an offset ending in 7), then SIGKILLs the broker; returns the acknowledged offsets.
pub async fn ack_until_killed(proc: &mut Proc) -> BTreeSet<u64> {
    let client = connect(&proc.addr).await;
    client.create_topic("g", 1).await.unwrap();
    let recs = (0..500).map(|i| Record::new(format!("{i}"))).collect();
    client.produce_batch("g", recs).await.unwrap();
    let consumer = Consumer::new(client, "g", "workers", FetchMode::Shared)
        .max_records(50)
        .wait(Duration::from_millis(200));
    let mut acked = BTreeSet::new();
    while acked.len() < 300 {
        let got = consumer.fetch().await.unwrap();
        let ids: Vec<u64> = got
            .iter()
            .filter(|d| d.offset % 10 != 7)
            .map(|d| d.delivery_id)
            .collect();
        consumer.ack(&ids).await.unwrap();
        acked.extend(got.iter().filter(|d| d.offset % 10 != 7).map(|d| d.offset));
    }
    proc.child.start_kill().unwrap();
    let _ = proc.child.wait().await;
    acked
}

/// Drains group `workers` of topic `g` from the broker at `addr`: no acknowledged offset comes
/// back, and everything else does.
pub async fn check_group_progress(addr: &str, acked: &BTreeSet<u64>) {
    let client = connect(addr).await;
    let consumer = Consumer::new(client, "g", "workers", FetchMode::Shared)
        .max_records(1000)
        .wait(Duration::from_millis(300));
    let mut again = BTreeSet::new();
    loop {
        let got = consumer.fetch().await.unwrap();
        if got.is_empty() {
            break;
        }
        for d in got {
            assert!(
                !acked.contains(&d.offset),
                "acknowledged offset {} redelivered",
                d.offset
            );
            again.insert(d.offset);
        }
    }
    let all: BTreeSet<u64> = (0..500).collect();
    let union: BTreeSet<u64> = acked.union(&again).copied().collect();
    assert_eq!(union, all, "everything not acknowledged comes back");
}
