//! A cluster of three real broker processes on loopback whose traffic between brokers goes
//! through one fault-injecting proxy per directed link (`plumbing::testing::FaultProxy`), so a
//! test can kill a broker, cut it off, or cut one link, and then checks every replica's log
//! on disk: every acknowledged record is there, once, at its offset, in per-key order, and the
//! replicas hold the same log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::client::{Client, ClientConfig};
use broker::protocol::Record;
use broker::storage::{LogConfig, OsDisk, PartitionLog, StoredRecord};
use plumbing::testing::FaultProxy;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

#[path = "cluster_groups.rs"]
mod groups;
#[path = "cluster_join.rs"]
mod join;
#[path = "cluster_retention.rs"]
mod retention;

const TOPIC: &str = "jobs";
const PARTITIONS: u32 = 2;

/// One broker process of the cluster.
struct Node {
    listen: SocketAddr,
    dir: PathBuf,
    peers: String,
    child: Option<Child>,
}

/// Three brokers, and the proxies between them.
struct TestCluster {
    _root: tempfile::TempDir,
    nodes: BTreeMap<u64, Node>,
    /// `(from, to)`: what `from` dials to reach `to`.
    links: BTreeMap<(u64, u64), FaultProxy>,
    /// Arguments to `broker serve` that every broker of this cluster gets.
    args: Vec<String>,
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

impl TestCluster {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts three brokers, each with `args` besides the cluster's own.
    async fn start_with(args: &[&str]) -> Self {
        let mut root = tempfile::tempdir().unwrap();
        // For a look at the brokers' logs and data after a failure.
        if std::env::var_os("KEEP_CLUSTER_DIRS").is_some() {
            eprintln!("cluster test dir: {}", root.path().display());
            root.disable_cleanup(true);
        }
        let ids = [1u64, 2, 3];
        let listens: BTreeMap<u64, SocketAddr> = ids.iter().map(|id| (*id, free_port())).collect();
        let mut links = BTreeMap::new();
        for from in ids {
            for to in ids {
                if from != to {
                    links.insert((from, to), FaultProxy::start(listens[&to]).await.unwrap());
                }
            }
        }
        let mut nodes = BTreeMap::new();
        for id in ids {
            let peers: Vec<String> = ids
                .iter()
                .map(|other| {
                    let addr = if *other == id {
                        listens[&id]
                    } else {
                        links[&(id, *other)].addr()
                    };
                    format!("{other}={addr}")
                })
                .collect();
            nodes.insert(
                id,
                Node {
                    listen: listens[&id],
                    dir: root.path().join(format!("node-{id}")),
                    peers: peers.join(","),
                    child: None,
                },
            );
        }
        let mut c = Self {
            _root: root,
            nodes,
            links,
            args: args.iter().map(ToString::to_string).collect(),
        };
        for id in ids {
            c.spawn(id).await;
        }
        c
    }

    /// Starts node `id` (again).
    async fn spawn(&mut self, id: u64) {
        self.spawn_with(id, &[]).await;
    }

    /// Starts node `id` (again) with `extra` arguments to `broker serve`.
    async fn spawn_with(&mut self, id: u64, extra: &[&str]) {
        let node = self.nodes.get(&id).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.with_extension("log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["--log-format", "json", "serve", "--no-metrics", "--listen"])
            .arg(node.listen.to_string())
            .arg("--data-dir")
            .arg(&node.dir)
            .args(["--node-id", &id.to_string(), "--peers", &node.peers])
            .args(["--advertise", &node.listen.to_string()])
            .args(["--heartbeat", "50ms", "--election-timeout", "500ms"])
            .args(&self.args)
            .args(extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the broker binary starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            use std::io::Write;
            let mut log = log;
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(log, "{line}");
                if line.contains("\"broker serving\"")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("the broker starts within 20 s")
            .expect("the broker logs that it serves");
        self.nodes.get_mut(&id).unwrap().child = Some(child);
    }

    /// SIGKILLs node `id`.
    async fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some(mut c) = node.child.take() {
            c.start_kill().unwrap();
            c.wait().await.unwrap();
        }
    }

    /// Stops every node with SIGTERM (they sync and close) and waits for them.
    async fn stop_all(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut c) = node.child.take() {
                if let Some(pid) = c.id() {
                    // The child is ours; SIGTERM asks it to drain.
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                }
                let _ = tokio::time::timeout(Duration::from_secs(20), c.wait()).await;
            }
        }
    }

    /// Every broker's client address, comma-separated.
    fn bootstrap(&self) -> String {
        let addrs: Vec<String> = self.nodes.values().map(|n| n.listen.to_string()).collect();
        addrs.join(",")
    }

    /// Cuts every link to and from `id` (it still runs and serves its clients).
    fn isolate(&self, id: u64) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.cut();
            }
        }
    }

    fn heal(&self) {
        for proxy in self.links.values() {
            proxy.heal();
        }
    }

    /// The node that leads and serves, asked through the bootstrap list.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = client(&self.bootstrap(), Duration::from_secs(2)).await
                && let Ok(m) = c.metadata().await
                && let Some((id, _)) = m.leader
                && c.stats(TOPIC).await.is_ok()
                && c.produce(TOPIC, Record::new("probe").with_dedup_id("probe"))
                    .await
                    .is_ok()
            {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader serves within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every node's log holds as many records as every other's, per partition.
    async fn wait_caught_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ends = Vec::new();
            for node in self.nodes.values() {
                let Ok(c) = client_of(node.listen).await else {
                    continue;
                };
                let Ok(stats) = c.stats(TOPIC).await else {
                    continue;
                };
                let parts: Vec<u64> = stats["topics"][0]["partition_stats"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p["log_end_offset"].as_u64())
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(parts.len(), PARTITIONS as usize, "stats: {stats}");
                ends.push(parts);
            }
            let distinct: HashSet<&Vec<u64>> = ends.iter().collect();
            if ends.len() == self.nodes.len() && distinct.len() == 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas did not catch up within 30 s: {ends:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's log of each partition, read from its files (the nodes must be stopped).
    fn logs(&self) -> BTreeMap<u64, Vec<Vec<StoredRecord>>> {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, read_logs(&n.dir)))
            .collect()
    }
}

fn read_logs(dir: &Path) -> Vec<Vec<StoredRecord>> {
    (0..PARTITIONS)
        .map(|p| {
            let (log, _) = PartitionLog::open(
                OsDisk::shared(),
                &dir.join("topics").join(TOPIC).join(p.to_string()),
                LogConfig::default(),
            )
            .unwrap();
            log.read(0, usize::MAX, usize::MAX, u64::MAX).unwrap()
        })
        .collect()
}

async fn client(addrs: &str, connect: Duration) -> Result<Client, broker::client::ClientError> {
    let mut cfg = ClientConfig::new(addrs);
    cfg.connect_timeout = connect;
    cfg.request_timeout = Duration::from_secs(5);
    Client::connect(cfg).await
}

/// A client of broker `addr` itself, not of the leader it would name.
async fn client_of(addr: SocketAddr) -> Result<Client, broker::client::ClientError> {
    let mut cfg = ClientConfig::new(addr.to_string());
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.follow_leader = false;
    Client::connect(cfg).await
}

/// An acknowledged record: producer, sequence number, partition, offset.
type Ack = (u64, u64, u32, u64);

/// `producers` tasks, each producing its own key's records one at a time (dedup id
/// `p{producer}-{seq}`) until `stop`, re-sending each after any failure until it is
/// acknowledged. Returns the acknowledged records and when each was acknowledged.
fn produce(
    bootstrap: String,
    producers: u64,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<(Ack, Instant)>> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let bootstrap = bootstrap.clone();
            let stop = stop.clone();
            let acked = Arc::clone(&acked);
            tokio::spawn(async move {
                let mut conn: Option<Client> = None;
                let mut seq = 0;
                while !stop.is_cancelled() {
                    seq += 1;
                    let id = format!("p{p}-{seq}");
                    let record = Record::new(id.clone())
                        .with_key(format!("k{p}"))
                        .with_dedup_id(id.clone());
                    let started = Instant::now();
                    loop {
                        assert!(
                            started.elapsed() < Duration::from_secs(30),
                            "{id} not acknowledged within 30 s"
                        );
                        let c = match conn.as_ref().filter(|c| !c.is_closed()) {
                            Some(c) => c.clone(),
                            None => match client(&bootstrap, Duration::from_secs(2)).await {
                                Ok(c) => {
                                    conn = Some(c.clone());
                                    c
                                }
                                Err(_) => continue,
                            },
                        };
                        match c.produce(TOPIC, record.clone()).await {
                            Ok(ack) => {
                                acked
                                    .lock()
                                    .unwrap()
                                    .push(((p, seq, ack.partition, ack.offset), Instant::now()));
                                break;
                            }
                            Err(e) => {
                                assert!(e.is_retriable(), "{id}: {e}");
                                conn = None;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        for t in tasks {
            t.await.unwrap();
        }
        std::mem::take(&mut *acked.lock().unwrap())
    })
}

/// Every acknowledged record is in every replica's log at its offset, once; keys keep their
/// order; and the replicas hold the same log, all of it (no retention deleted anything).
fn check_logs(logs: &BTreeMap<u64, Vec<Vec<StoredRecord>>>, acked: &[(Ack, Instant)]) {
    for (id, log) in logs {
        for (p, records) in log.iter().enumerate() {
            if let Some(r) = records.first() {
                assert_eq!(
                    r.offset, 0,
                    "node {id}'s log of partition {p} lost its start"
                );
            }
        }
    }
    check_retained_logs(logs, acked);
}

/// [`check_logs`] for logs whose front retention may have deleted: each log is checked from
/// its first record on, and two logs are compared where both still hold records.
fn check_retained_logs(logs: &BTreeMap<u64, Vec<Vec<StoredRecord>>>, acked: &[(Ack, Instant)]) {
    let (first, reference) = logs.iter().next().unwrap();
    for (id, log) in logs {
        for (p, records) in log.iter().enumerate() {
            let from = [records, &reference[p]]
                .iter()
                .filter_map(|rs| rs.first().map(|r| r.offset))
                .max()
                .unwrap_or(0);
            let payloads = |rs: &[StoredRecord]| -> Vec<(u64, bytes::Bytes)> {
                rs.iter()
                    .filter(|r| r.offset >= from)
                    .map(|r| (r.offset, r.record.payload.clone()))
                    .collect()
            };
            let (mine, theirs) = (payloads(records), payloads(&reference[p]));
            if mine != theirs {
                let at = mine.iter().zip(&theirs).position(|(a, b)| a != b);
                panic!(
                    "node {id} and node {first} hold different logs of partition {p}: {} and {} records, first difference at {at:?}",
                    mine.len(),
                    theirs.len()
                );
            }
            let mut seen = HashSet::new();
            for r in records {
                let dedup = r.record.dedup_id.clone().unwrap_or_default();
                assert!(
                    seen.insert(dedup.clone()),
                    "node {id}: {dedup} twice in partition {p}"
                );
            }
        }
        let index: HashMap<(u32, u64), &StoredRecord> = log
            .iter()
            .enumerate()
            .flat_map(|(p, rs)| rs.iter().map(move |r| ((p as u32, r.offset), r)))
            .collect();
        let starts: Vec<u64> = log
            .iter()
            .map(|rs| rs.first().map_or(u64::MAX, |r| r.offset))
            .collect();
        let mut last: HashMap<u64, (u64, u64)> = HashMap::new();
        let mut sorted: Vec<&Ack> = acked.iter().map(|(a, _)| a).collect();
        sorted.sort();
        for (producer, seq, partition, offset) in sorted {
            if *offset < starts[*partition as usize] {
                continue;
            }
            let want = format!("p{producer}-{seq}");
            let r = index.get(&(*partition, *offset)).unwrap_or_else(|| {
                panic!("node {id} lost acknowledged {want} at {partition}/{offset}")
            });
            assert_eq!(
                r.record.dedup_id.as_deref(),
                Some(want.as_str()),
                "node {id}"
            );
            if let Some((prev_seq, prev_offset)) = last.insert(*producer, (*seq, *offset)) {
                assert!(
                    *offset > prev_offset,
                    "node {id}: key k{producer} out of order: {prev_seq} at {prev_offset}, {seq} at {offset}"
                );
            }
        }
    }
}

async fn create_topic(c: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) = client(&c.bootstrap(), Duration::from_secs(2)).await
            && client.create_topic(TOPIC, PARTITIONS).await.is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the topic was not created within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_under_load_loses_no_acknowledged_record() {
    let mut c = TestCluster::start().await;
    create_topic(&c).await;
    let leader = c.leader().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = produce(c.bootstrap(), 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    c.kill(leader).await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let acked = producing.await.unwrap();
    let before = acked.iter().filter(|(_, t)| *t < killed_at).count();
    let first_after = acked
        .iter()
        .filter(|(_, t)| *t > killed_at)
        .map(|(_, t)| t.duration_since(killed_at))
        .min()
        .expect("produces were acknowledged after the failover");
    eprintln!(
        "{} acknowledged ({before} before the kill); first acknowledgement {first_after:?} after the leader's SIGKILL",
        acked.len()
    );
    assert!(before > 100, "only {before} acknowledged before the kill");
    c.spawn(leader).await;
    c.wait_caught_up().await;
    c.stop_all().await;
    check_logs(&c.logs(), &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_stops_acknowledging_and_its_tail_is_cut_when_it_returns() {
    let mut c = TestCluster::start().await;
    create_topic(&c).await;
    let leader = c.leader().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = produce(c.bootstrap(), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A client of the old leader alone, which keeps talking to it after the cut.
    let direct = client_of(c.nodes[&leader].listen).await.unwrap();
    c.isolate(leader);
    let cut_at = Instant::now();
    // Within its lease it stops acknowledging: a produce sent to it now is refused (or never
    // answered before the client gives up), never acknowledged.
    let late = direct
        .produce(TOPIC, Record::new("late").with_dedup_id("late"))
        .await;
    assert!(late.is_err(), "the cut-off leader acknowledged {late:?}");
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    eprintln!("a new leader serves {:?} after the cut", cut_at.elapsed());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.heal();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let acked = producing.await.unwrap();
    c.wait_caught_up().await;
    c.stop_all().await;
    let logs = c.logs();
    check_logs(&logs, &acked);
    let late_kept = logs[&leader]
        .iter()
        .flatten()
        .any(|r| r.record.dedup_id.as_deref() == Some("late"));
    assert!(
        !late_kept,
        "the old leader's unacknowledged tail was not cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_down_does_not_stop_produces_and_catches_up() {
    let mut c = TestCluster::start().await;
    create_topic(&c).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = produce(c.bootstrap(), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill(follower).await;
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.spawn(follower).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let acked = producing.await.unwrap();
    let while_down = acked
        .iter()
        .filter(|(_, t)| *t > down_at && t.duration_since(down_at) < Duration::from_millis(1500))
        .count();
    assert!(
        while_down > 50,
        "only {while_down} acknowledged while a follower was down"
    );
    c.wait_caught_up().await;
    c.stop_all().await;
    check_logs(&c.logs(), &acked);
}

/// `broker drain` on the leader under load: another broker is elected and serves, nothing
/// acknowledged is lost, and the drained broker stands for no election (when the new leader is
/// killed, the third broker takes over) until it is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_leader_hands_over_and_stands_for_no_election() {
    let mut c = TestCluster::start().await;
    create_topic(&c).await;
    let drained = c.leader().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = produce(c.bootstrap(), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["drain", "--addr", &c.nodes[&drained].listen.to_string()])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "broker drain failed: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.starts_with("drained:"), "{said}");
    eprintln!("drain answered after {:?}: {said}", started.elapsed());
    let next = c.leader().await;
    assert_ne!(next, drained, "the drained broker still leads");
    let stats = client_of(c.nodes[&drained].listen)
        .await
        .unwrap()
        .stats("")
        .await
        .unwrap();
    assert_eq!(stats["cluster"]["draining"], true, "{stats}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The drained broker may vote but not stand: the third one is elected.
    c.kill(next).await;
    let third = c.leader().await;
    assert!(
        third != drained && third != next,
        "node {third} leads after node {next} was killed; node {drained} is drained"
    );
    let (draining, _) = client_of(c.nodes[&drained].listen)
        .await
        .unwrap()
        .drain(false)
        .await
        .unwrap();
    assert!(!draining);
    c.spawn(next).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let acked = producing.await.unwrap();
    c.wait_caught_up().await;
    c.stop_all().await;
    check_logs(&c.logs(), &acked);
}

/// Rounds of faults while 4 producers and a consumer group run: each round SIGKILLs a random
/// broker (restarted a moment later) or cuts a random link, one way or both, for a moment.
/// Then every replica must hold every acknowledged record, once, in per-key order; the group
/// must have finished every one of them and never had one delivered again after its
/// acknowledgement was answered. `CLUSTER_CHAOS_ROUNDS` and
/// `CLUSTER_CHAOS_SEED` make it run longer, or replay, outside CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_rounds_of_kills_and_cut_links_lose_no_acknowledged_record() {
    use rand::{Rng, SeedableRng};
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("CLUSTER_CHAOS_ROUNDS", 4);
    let seed = env("CLUSTER_CHAOS_SEED", 7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = TestCluster::start().await;
    create_topic(&c).await;
    c.leader().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let producing = produce(c.bootstrap(), 4, stop.clone());
    let consuming = groups::consume(c.bootstrap(), stop.clone());
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        let victim = ids[rng.random_range(0..ids.len())];
        if rng.random_bool(0.5) {
            eprintln!("round {round} (seed {seed}): SIGKILL node {victim}");
            c.kill(victim).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
            c.spawn(victim).await;
        } else {
            let other = ids[rng.random_range(0..ids.len())];
            let both = rng.random_bool(0.5) || other == victim;
            if both {
                eprintln!("round {round} (seed {seed}): node {victim} cut off");
                c.isolate(victim);
            } else {
                eprintln!("round {round} (seed {seed}): link {victim}->{other} cut");
                c.links[&(victim, other)].cut();
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
            c.heal();
        }
    }
    // Settle: a leader serves, and a little more is produced through it.
    c.leader().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let acked = producing.await.unwrap();
    let consumed = tokio::time::timeout(Duration::from_secs(60), consuming)
        .await
        .expect("the consumer drains the topic within 60 s")
        .unwrap();
    eprintln!(
        "{} records acknowledged over {rounds} rounds; the group was delivered {} and acknowledged {}",
        acked.len(),
        consumed.delivered.len(),
        consumed.acked.len()
    );
    assert!(
        consumed.redelivered_after_ack.is_empty(),
        "delivered again after their acknowledgement was answered: {:?}",
        consumed.redelivered_after_ack
    );
    let missing: Vec<&Ack> = acked
        .iter()
        .map(|(a, _)| a)
        .filter(|(_, _, p, o)| !consumed.delivered.contains(&(*p, *o)))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged produces never delivered to the group: {missing:?}"
    );
    c.wait_caught_up().await;
    c.stop_all().await;
    check_logs(&c.logs(), &acked);
}
