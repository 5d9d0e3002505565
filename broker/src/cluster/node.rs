//! This broker as a member of a cluster: its Raft node, its replicas, and its leadership when
//! Raft makes it leader (`REPLICATION.md`).
//!
//! - Raft runs on `data_dir/raft`; every broker proposes the same initial membership (the ids
//!   of `--peers`), which openraft makes safe.
//! - Every committed topic is created here as on every other broker (with its dead-letter
//!   topic), and every local partition has a [`Replica`].
//! - When Raft elects this broker leader of term `T`, it leads epoch `T` (`leadership.rs`): it recovers every
//!   partition, then replicates them and serves clients. It stops serving when Raft says it no
//!   longer leads, when a replica promised a later epoch, or when it has not heard from a
//!   majority within the election timeout (its lease); produces waiting for their commit are
//!   then answered `not_leader`, and their producers send them again, with their dedup ids, to
//!   the new leader.
//! - Only the serving leader adds to the local log on its own (produces, dead letters); a
//!   follower's log grows only by its leader's requests. Every broker applies retention to its
//!   own log, below the commit point it knows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::BasicNode;
use openraft::storage::RaftLogStorage;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::join::{self, JoinState};
use super::leader::{Contact, LedPartition};
use super::meta::{MetaCommand, MetaResponse, Metadata};
use super::network::{Network, serve_raft};
use super::peers::Peers;
use super::replica::{Replica, ReplicaError};
use super::{NodeId, Raft, raft_store};
use crate::config::ClusterConfig;
use crate::engine::{Broker, DLQ_SUFFIX, EngineError, TopicConfig, validate_name};
use crate::protocol::peer::{
    Metadata as MetadataAnswer, PeerAnswer, RaftKind, ReadReplicaRequest, ReplicateRequest,
};
use crate::storage::StorageError;

/// How long a topic creation waits for the new topic to be served.
const CREATE_WAIT: Duration = Duration::from_secs(10);

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Raft's files.
    #[error("raft storage: {0}")]
    Store(String),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// A partition's replica files.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Whether this broker serves clients, as leader of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Serving {
    /// The epoch it leads (0: none).
    pub epoch: u64,
    /// Every partition recovered and the lease holds.
    pub ready: bool,
}

/// A leadership in progress (`leadership.rs` runs it).
#[derive(Debug)]
pub(super) struct Leadership {
    pub(super) epoch: u64,
    pub(super) contact: Arc<Contact>,
    pub(super) led: Mutex<BTreeMap<(String, u32), Arc<LedPartition>>>,
    /// Stops its tasks.
    pub(super) cancel: CancellationToken,
    /// Fired by a task that learned a later epoch exists.
    pub(super) deposed: CancellationToken,
}

/// This broker's membership of a cluster.
pub struct Cluster {
    pub(super) config: ClusterConfig,
    pub(super) broker: Arc<Broker>,
    pub(super) raft: Raft,
    pub(super) metadata: watch::Receiver<Metadata>,
    pub(super) peers: Arc<Peers>,
    pub(super) replicas: Mutex<BTreeMap<(String, u32), Arc<Replica>>>,
    pub(super) leadership: Mutex<Option<Arc<Leadership>>>,
    pub(super) serving: watch::Sender<Serving>,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
    /// The latest epoch a leader asked this broker for, or it led (`groups.rs`).
    pub(super) fence: AtomicU64,
    /// Held to write a leader's group entries (shared) or to read the groups for a new leader
    /// (exclusive).
    pub(super) group_fence: tokio::sync::RwLock<()>,
    /// Drained by an operator: stands for no election (`drain.rs`).
    pub(super) draining: AtomicBool,
    /// A join on a new disk, under way or done (`join.rs`).
    pub(super) join: Mutex<Option<JoinState>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.config.node_id)
            .field("serving", &self.serving())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts Raft and this broker's replicas, and the tasks that follow leadership and
    /// metadata, until `shutdown`.
    ///
    /// # Errors
    /// When Raft's storage cannot be opened or a replica's files cannot be read.
    pub async fn start(
        broker: Arc<Broker>,
        config: ClusterConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, ClusterError> {
        let dir = raft_store::dir(&broker.config().data_dir);
        let (mut log_store, state_machine) = raft_store::open(&dir)
            .await
            .map_err(|e| ClusterError::Store(e.to_string()))?;
        // openraft takes a broker that led term T before it stopped back as leader of T at
        // once. An epoch must never be led twice (what it wrote before the restart may have
        // been lost here and kept by a follower, and its records would be told apart by label
        // alone), so the broker comes back a follower of T and its next leadership has a new
        // term. Voting for itself in T stands: it still votes for no one else in T.
        let vote = log_store
            .read_vote()
            .await
            .map_err(|e| ClusterError::Store(e.to_string()))?;
        if let Some(v) =
            vote.filter(|v| v.is_committed() && v.leader_id().voted_for() == Some(config.node_id))
        {
            let follower = openraft::Vote::new(v.leader_id().get_term(), config.node_id);
            log_store
                .save_vote(&follower)
                .await
                .map_err(|e| ClusterError::Store(e.to_string()))?;
        }
        let metadata = state_machine.metadata_watch();
        let peers = Arc::new(Peers::new(
            config.node_id,
            &config.peers,
            broker.config().token.clone(),
            config.peer_timeout,
        ));
        let disk = Arc::clone(broker.host().disk());
        let mut joined = join::load(&*disk, &dir)?;
        let fresh = vote.is_none()
            && log_store
                .get_log_state()
                .await
                .map_err(|e| ClusterError::Store(e.to_string()))?
                .last_log_id
                .is_none();
        if joined.is_none() && config.join && fresh {
            let Some(epoch) = join::learn_epoch(&peers, config.peers.len(), &shutdown).await else {
                return Err(ClusterError::Raft(
                    "stopped while joining, before enough brokers answered".into(),
                ));
            };
            let state = JoinState {
                epoch,
                groups_copied: false,
                done: false,
            };
            join::save(&*disk, &dir, state)?;
            tracing::info!(
                node = config.node_id,
                epoch,
                "joining the cluster on a new disk: counts towards no majority until it holds what it lost"
            );
            joined = Some(state);
        } else if config.join && !fresh && joined.is_none() {
            tracing::info!("--join ignored: this broker already has cluster state");
        }
        if let Some(j) = joined.filter(|j| !j.done) {
            // A vote for itself in the join's epoch, so that it votes for no one else in it
            // (written after join.json, and again here after a crash between the two).
            let vote = log_store
                .read_vote()
                .await
                .map_err(|e| ClusterError::Store(e.to_string()))?;
            if vote.is_none_or(|v| v.leader_id().get_term() < j.epoch) {
                log_store
                    .save_vote(&openraft::Vote::new(j.epoch, config.node_id))
                    .await
                    .map_err(|e| ClusterError::Store(e.to_string()))?;
            }
        }
        let (election_min, election_max) = election_timeout(&config);
        let raft_config = openraft::Config {
            cluster_name: "ticketrush-broker".into(),
            heartbeat_interval: millis(config.heartbeat),
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(Arc::clone(&peers)),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        // Every broker proposes the same membership, the ids alone (addresses differ from one
        // broker's view to another's); openraft makes proposing it more than once safe.
        let members: BTreeMap<NodeId, BasicNode> = config
            .peers
            .keys()
            .map(|id| (*id, BasicNode::default()))
            .collect();
        // Only a broker that never was in the cluster proposes it (openraft logs an error for
        // every other call).
        if joined.is_none()
            && !raft.is_initialized().await.unwrap_or(true)
            && let Err(e) = raft.initialize(members).await
        {
            tracing::debug!(error = %e, "another broker initialized the cluster first");
        }
        let cluster = Arc::new(Self {
            config,
            broker,
            raft,
            metadata,
            peers,
            replicas: Mutex::new(BTreeMap::new()),
            leadership: Mutex::new(None),
            serving: watch::Sender::new(Serving::default()),
            tasks: TaskTracker::new(),
            shutdown,
            fence: AtomicU64::new(0),
            group_fence: tokio::sync::RwLock::new(()),
            draining: AtomicBool::new(false),
            join: Mutex::new(joined),
        });
        if let Some(epoch) = cluster.joining_epoch() {
            cluster.saw_epoch(epoch);
            cluster.raft.runtime_config().elect(false);
            let c = Arc::clone(&cluster);
            cluster.tasks.spawn(async move { c.finish_join().await });
        }
        for r in cluster.open_replicas()? {
            cluster.saw_epoch(r.lock().await.promised);
        }
        cluster.replicate_group_progress();
        let c = Arc::clone(&cluster);
        cluster
            .tasks
            .spawn(async move { c.follow_metadata().await });
        let c = Arc::clone(&cluster);
        cluster
            .tasks
            .spawn(async move { c.follow_leadership().await });
        Ok(cluster)
    }

    /// This broker's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Whether (and in which epoch) this broker serves clients now.
    pub fn serving(&self) -> Serving {
        *self.serving.borrow()
    }

    /// Stops Raft and every task (after the server stopped taking requests).
    pub async fn stop(&self) {
        self.stop_leading("shutting down");
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }

    /// Makes a replica for every local partition that has none.
    pub(super) fn open_replicas(&self) -> Result<Vec<Arc<Replica>>, StorageError> {
        let mut made = Vec::new();
        let mut replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        for topic in self.broker.topics() {
            for (i, _) in topic.partitions().iter().enumerate() {
                let key = (
                    topic.name().to_string(),
                    u32::try_from(i).unwrap_or(u32::MAX),
                );
                if replicas.contains_key(&key) {
                    continue;
                }
                let dir = self.broker.partition_dir(topic.name(), key.1);
                let r = Arc::new(Replica::open(
                    Arc::clone(&topic),
                    i,
                    dir,
                    Arc::clone(self.broker.host().disk()),
                    self.joining_epoch(),
                )?);
                replicas.insert(key, Arc::clone(&r));
                made.push(r);
            }
        }
        Ok(made)
    }

    pub(super) fn all_replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn replica(&self, topic: &str, partition: u32) -> Option<Arc<Replica>> {
        self.replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Creates every committed topic here (and its dead-letter topic), then its replicas, and
    /// leads the new partitions if this broker leads.
    async fn follow_metadata(self: Arc<Self>) {
        let mut metadata = self.metadata.clone();
        loop {
            let topics = metadata.borrow_and_update().topics.clone();
            for (name, config) in topics {
                for (topic, partitions) in [
                    (name.clone(), config.partitions),
                    (format!("{name}{DLQ_SUFFIX}"), 1),
                ] {
                    if self.broker.topic(&topic).is_some() {
                        continue;
                    }
                    let created = self
                        .broker
                        .create_topic(
                            &topic,
                            partitions,
                            config.retention_bytes,
                            config.retention_ms,
                        )
                        .await;
                    if let Err(e) = created {
                        tracing::error!(topic, error = %e, "cannot create a committed topic here");
                    }
                }
            }
            match self.open_replicas() {
                Ok(new) if !new.is_empty() => {
                    let leadership = self.current_leadership();
                    if let Some(l) = leadership {
                        self.lead_partitions(&l, new).await;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot open a replica"),
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                r = metadata.changed() => if r.is_err() { return },
            }
        }
    }

    /// Refuses a client's request unless this broker serves: the error names the leader.
    ///
    /// # Errors
    /// `NotLeader` when another broker leads, none is known, or this one is recovering.
    pub fn check_serving(&self) -> Result<(), EngineError> {
        let s = self.serving();
        if s.ready {
            return Ok(());
        }
        let m = self.raft.metrics().borrow().clone();
        let message = match m.current_leader {
            Some(id) if id == self.config.node_id => format!(
                "node {id} was elected leader of epoch {} and is recovering (or lost contact with a majority); retry shortly",
                m.current_term
            ),
            Some(id) => format!(
                "node {} does not lead; node {id} at {} does (ask Metadata)",
                self.config.node_id,
                self.address_of(id)
            ),
            None => format!(
                "node {} does not lead and no leader is known yet; retry shortly",
                self.config.node_id
            ),
        };
        Err(EngineError::NotLeader(message))
    }

    fn address_of(&self, node: NodeId) -> String {
        self.metadata
            .borrow()
            .addresses
            .get(&node)
            .cloned()
            .unwrap_or_default()
    }

    /// The answer to Metadata.
    pub fn metadata(&self) -> MetadataAnswer {
        let m = self.raft.metrics().borrow().clone();
        let addresses = self.metadata.borrow().addresses.clone();
        // This broker names itself only while it serves: one cut off from the majority may
        // still think it leads, and must send clients elsewhere.
        let leader = m
            .current_leader
            .filter(|id| *id != self.config.node_id || self.serving().ready);
        MetadataAnswer {
            clustered: true,
            epoch: m.current_term,
            leader: leader.map(|id| (id, addresses.get(&id).cloned().unwrap_or_default())),
            nodes: self
                .config
                .peers
                .keys()
                .map(|id| (*id, addresses.get(id).cloned().unwrap_or_default()))
                .collect(),
        }
    }

    /// Creates a topic through Raft, then waits until this broker serves it.
    ///
    /// # Errors
    /// A bad name or partition count, `NotLeader`, or a Raft or creation failure.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        retention_bytes: u64,
        retention_ms: u64,
    ) -> Result<(bool, u32), EngineError> {
        self.check_serving()?;
        validate_name("topic", name)?;
        crate::engine::validate_partitions(partitions)?;
        let cmd = MetaCommand::CreateTopic {
            name: name.to_string(),
            config: TopicConfig {
                partitions,
                retention_bytes,
                retention_ms,
            },
        };
        let written = self.raft.client_write(cmd).await.map_err(|e| {
            EngineError::NotLeader(format!("the topic could not be committed: {e}"))
        })?;
        let (created, config) = match written.data {
            MetaResponse::Topic { created, config } => (created, config),
            MetaResponse::None => {
                return Err(EngineError::Invalid("unexpected raft answer".into()));
            }
        };
        // Served once every partition (and the dead-letter topic's) is led here.
        let dlq = format!("{name}{DLQ_SUFFIX}");
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        loop {
            let led = self.current_leadership().is_some_and(|l| {
                let led = l.led.lock().unwrap_or_else(PoisonError::into_inner);
                (0..config.partitions).all(|p| led.contains_key(&(name.to_string(), p)))
                    && led.contains_key(&(dlq.clone(), 0))
            });
            if led {
                return Ok((created, config.partitions));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::NotLeader(format!(
                    "topic {name:?} was committed but is not served here within {CREATE_WAIT:?}; retry"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Answers a Raft message from a peer.
    ///
    /// # Errors
    /// When the body is not a Raft message of its kind.
    pub async fn raft_message(
        &self,
        kind: RaftKind,
        json: &[u8],
    ) -> Result<bytes::Bytes, EngineError> {
        serve_raft(&self.raft, kind, json)
            .await
            .map_err(EngineError::Invalid)
    }

    fn replica_for(&self, topic: &str, partition: u32) -> Result<Arc<Replica>, EngineError> {
        self.replica(topic, partition).ok_or_else(|| {
            EngineError::UnknownTopic(format!(
                "{topic}/{partition} (not created here yet: its creation is still being applied)"
            ))
        })
    }

    /// Answers a leader's Promise.
    ///
    /// # Errors
    /// When the partition is unknown here or its promise cannot be written.
    pub async fn promise(
        &self,
        epoch: u64,
        topic: &str,
        partition: u32,
    ) -> Result<PeerAnswer, EngineError> {
        self.step_down_for(epoch);
        let r = self.replica_for(topic, partition)?;
        let answer = r.promise(epoch).await.map_err(replica_error)?;
        if !matches!(answer, PeerAnswer::Stale { .. }) {
            self.saw_epoch(epoch);
        }
        Ok(answer)
    }

    /// Answers a leader's Replicate.
    ///
    /// # Errors
    /// When the partition is unknown here or its disk fails.
    pub async fn replicate(&self, req: ReplicateRequest) -> Result<PeerAnswer, EngineError> {
        self.step_down_for(req.epoch);
        let r = self.replica_for(&req.partition.topic, req.partition.partition)?;
        let epoch = req.epoch;
        let answer = r
            .replicate(epoch, req.commit, req.records)
            .await
            .map_err(replica_error)?;
        if !matches!(answer, PeerAnswer::Stale { .. }) {
            self.saw_epoch(epoch);
        }
        Ok(answer)
    }

    /// Answers a recovering leader's ReadReplica.
    ///
    /// # Errors
    /// When the partition is unknown here or its records cannot be read.
    pub async fn read_replica(&self, req: ReadReplicaRequest) -> Result<PeerAnswer, EngineError> {
        let r = self.replica_for(&req.partition.topic, req.partition.partition)?;
        r.read(req.epoch, req.from, req.max_records)
            .await
            .map_err(replica_error)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// This broker's election timeout for openraft, `(min, max)` in milliseconds.
///
/// openraft 0.9 draws a node's election timeout once, when the node starts, and checks it on a
/// timer that ticks every heartbeat: two brokers whose draws fall in one tick stand for election
/// together after every failed round and split the vote again and again (seen: 13 rounds, 12
/// s). So each broker gets its own timeout instead, in the order of its id among the members,
/// at least two heartbeats apart: `--election-timeout` for the first, then a step more for each
/// next one. A follower whose leader went silent stands after about twice its timeout (openraft
/// adds the leader's lease), the first surviving broker in that order first.
fn election_timeout(config: &ClusterConfig) -> (u64, u64) {
    let base = millis(config.election_timeout);
    let members = u64::try_from(config.peers.len().max(1)).unwrap_or(1);
    let rank = u64::try_from(
        config
            .peers
            .keys()
            .position(|id| *id == config.node_id)
            .unwrap_or(0),
    )
    .unwrap_or(0);
    let step = (base / members).max(2 * millis(config.heartbeat));
    let min = base + rank * step;
    (min, min + 1)
}

fn replica_error(e: ReplicaError) -> EngineError {
    match e {
        ReplicaError::Storage(s) => EngineError::Storage(s),
        ReplicaError::Invalid(m) => EngineError::Invalid(m),
        e @ ReplicaError::CatchingUp(_) => EngineError::NotLeader(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_broker_has_its_own_election_timeout_two_heartbeats_apart_or_more() {
        let peers: BTreeMap<u64, String> = [3u64, 1, 7]
            .into_iter()
            .map(|id| (id, format!("broker-{id}:7070")))
            .collect();
        let at = |id| {
            let c = ClusterConfig::new(id, peers.clone(), "broker-1:7070");
            election_timeout(&c)
        };
        // 500 ms over 3 brokers: 166 ms apart (two heartbeats are 200 ms: the step is 200).
        assert_eq!(at(1), (500, 501));
        assert_eq!(at(3), (700, 701));
        assert_eq!(at(7), (900, 901));
    }
}
