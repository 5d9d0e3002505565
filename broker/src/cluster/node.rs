//! This broker as a member of a cluster: its Raft node, its replicas, and its leadership when
//! Raft makes it leader (`REPLICATION.md`).
//!
//! - Raft runs on `data_dir/raft`; every broker proposes the same initial membership (the ids
//!   of `--peers`), which openraft makes safe.
//! - Every committed topic is created here as on every other broker (with its dead-letter
//!   topic), and every local partition has a [`Replica`].
//! - When Raft elects this broker leader of term `T`, it leads epoch `T`: it recovers every
//!   partition, then replicates them and serves clients. It stops serving when Raft says it no
//!   longer leads, when a replica promised a later epoch, or when it has not heard from a
//!   majority within the election timeout (its lease); produces waiting for their commit are
//!   then answered `not_leader`, and their producers send them again, with their dedup ids, to
//!   the new leader.
//! - Only the serving leader changes the local log on its own (produces, dead letters,
//!   retention); a follower's log changes only by its leader's requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, ServerState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::leader::{
    Contact, FollowerLag, LedPartition, REPLICA_LAG_TIME, RecoverError, commit_on_durable, recover,
    replicate_to,
};
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

/// A partition this broker leads, as the metrics and stats show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplication {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The epoch it is led in.
    pub epoch: u64,
    /// Each follower, and how far behind it is.
    pub lags: Vec<FollowerLag>,
}

impl PartitionReplication {
    /// Whether a follower has not held everything written here for [`REPLICA_LAG_TIME`].
    pub fn is_under_replicated(&self) -> bool {
        self.lags.iter().any(|l| l.behind >= REPLICA_LAG_TIME)
    }
}

/// A leadership in progress.
#[derive(Debug)]
struct Leadership {
    epoch: u64,
    contact: Arc<Contact>,
    led: Mutex<BTreeMap<(String, u32), Arc<LedPartition>>>,
    /// Stops its tasks.
    cancel: CancellationToken,
    /// Fired by a task that learned a later epoch exists.
    deposed: CancellationToken,
}

/// This broker's membership of a cluster.
pub struct Cluster {
    config: ClusterConfig,
    broker: Arc<Broker>,
    raft: Raft,
    metadata: watch::Receiver<Metadata>,
    peers: Arc<Peers>,
    replicas: Mutex<BTreeMap<(String, u32), Arc<Replica>>>,
    leadership: Mutex<Option<Arc<Leadership>>>,
    serving: watch::Sender<Serving>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
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
        let dir = broker.config().data_dir.join("raft");
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
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!(error = %e, "raft already initialized");
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
        });
        cluster.open_replicas()?;
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
    fn open_replicas(&self) -> Result<Vec<Arc<Replica>>, StorageError> {
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
                )?);
                replicas.insert(key, Arc::clone(&r));
                made.push(r);
            }
        }
        Ok(made)
    }

    fn all_replicas(&self) -> Vec<Arc<Replica>> {
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

    fn current_leadership(&self) -> Option<Arc<Leadership>> {
        self.leadership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Follows Raft's view of who leads: leads each term Raft makes this broker leader of.
    async fn follow_leadership(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut lease = tokio::time::interval(self.config.heartbeat);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (state, term) = {
                let m = metrics.borrow_and_update();
                (m.state, m.current_term)
            };
            let led = self.current_leadership();
            let deposed = led.as_ref().is_some_and(|l| l.deposed.is_cancelled());
            match (state, &led) {
                (ServerState::Leader, Some(l)) if l.epoch == term && !deposed => {}
                (ServerState::Leader, _) if !deposed => {
                    let this = Arc::clone(&self);
                    self.tasks.spawn(async move { this.lead(term).await });
                    // `lead` installs its leadership first thing; give it the turn.
                    tokio::task::yield_now().await;
                }
                _ if led.is_some() => {
                    self.stop_leading(if deposed {
                        "a replica promised a later epoch"
                    } else {
                        "raft elected another leader"
                    });
                }
                _ => {}
            }
            if let Some(l) = self.current_leadership() {
                let holds = self.lease_holds(&l);
                let lost = self.serving.send_if_modified(|s| {
                    let ready = s.epoch == l.epoch && s.ready;
                    if ready && !holds {
                        tracing::warn!(
                            epoch = l.epoch,
                            "no contact with a majority within the election timeout: not serving"
                        );
                        s.ready = false;
                        return true;
                    }
                    false
                });
                if lost {
                    // What waits may never be committed by this leader.
                    self.fail_waiting();
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                r = metrics.changed() => if r.is_err() { return },
                _ = lease.tick() => {}
            }
        }
    }

    /// Leads epoch `epoch`: recovers every partition, then replicates and serves.
    async fn lead(self: Arc<Self>, epoch: u64) {
        let leadership = Arc::new(Leadership {
            epoch,
            contact: Arc::new(Contact::new(self.config.peers.len())),
            led: Mutex::new(BTreeMap::new()),
            cancel: self.shutdown.child_token(),
            deposed: CancellationToken::new(),
        });
        {
            let mut slot = self
                .leadership
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|l| l.epoch >= epoch) {
                return;
            }
            if let Some(old) = slot.replace(Arc::clone(&leadership)) {
                old.cancel.cancel();
            }
        }
        self.serving.send_replace(Serving {
            epoch,
            ready: false,
        });
        tracing::info!(
            epoch,
            node = self.config.node_id,
            "raft elected this broker: recovering every partition"
        );
        let started = tokio::time::Instant::now();
        if let Some(r) = self.led_before(epoch) {
            tracing::error!(
                epoch,
                topic = r.topic_name(),
                partition = r.index(),
                "a replica here already has this epoch or a later one: refusing to lead it (an epoch is never led twice)"
            );
            return;
        }
        self.register_address().await;
        let replicas = self.all_replicas();
        let partitions = replicas.len();
        self.lead_partitions(&leadership, replicas).await;
        if leadership.cancel.is_cancelled() || leadership.deposed.is_cancelled() {
            return;
        }
        leadership.contact.heard(self.config.node_id);
        self.serving.send_replace(Serving { epoch, ready: true });
        self.broker.metrics().cluster_leaderships.inc();
        tracing::info!(epoch, partitions, took = ?started.elapsed(), "leading: serving clients");
        // Serving again once contact with a majority comes back within the epoch.
        let mut tick = tokio::time::interval(self.config.heartbeat);
        loop {
            tokio::select! {
                () = leadership.cancel.cancelled() => return,
                () = leadership.deposed.cancelled() => return,
                _ = tick.tick() => {}
            }
            let holds = self.lease_holds(&leadership);
            self.serving.send_if_modified(|s| {
                if s.epoch == epoch && holds && !s.ready {
                    tracing::info!(epoch, "contact with a majority is back: serving");
                    s.ready = true;
                    return true;
                }
                false
            });
        }
    }

    /// A replica whose labels already hold `epoch` or a later one: this broker must not lead
    /// `epoch`.
    fn led_before(&self, epoch: u64) -> Option<Arc<Replica>> {
        self.all_replicas().into_iter().find(|r| {
            r.try_lock_meta()
                .is_some_and(|m| m.history.entries().iter().any(|e| e.epoch >= epoch))
        })
    }

    /// Recovers `replicas` in `leadership`'s epoch (retrying until it ends) and starts their
    /// replication.
    async fn lead_partitions(&self, leadership: &Arc<Leadership>, replicas: Vec<Arc<Replica>>) {
        let recoveries = replicas.into_iter().map(|replica| {
            let leadership = Arc::clone(leadership);
            let peers = Arc::clone(&self.peers);
            async move {
                let mut backoff = Duration::from_millis(20);
                loop {
                    if leadership.cancel.is_cancelled() || leadership.deposed.is_cancelled() {
                        return None;
                    }
                    match recover(Arc::clone(&replica), leadership.epoch, &peers, &leadership.contact).await {
                        Ok(led) => return Some(Arc::new(led)),
                        Err(RecoverError::Deposed(promised)) => {
                            tracing::info!(epoch = leadership.epoch, promised, "deposed during recovery");
                            leadership.deposed.cancel();
                            return None;
                        }
                        Err(e) => {
                            tracing::warn!(topic = replica.topic_name(), partition = replica.index(), error = %e, "recovery failed; retrying");
                            tokio::select! {
                                () = leadership.cancel.cancelled() => return None,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_millis(500));
                        }
                    }
                }
            }
        });
        let led: Vec<Arc<LedPartition>> = futures_util::future::join_all(recoveries)
            .await
            .into_iter()
            .flatten()
            .collect();
        for l in led {
            let key = (l.replica().topic_name().to_string(), l.replica().index());
            for node in self.peers.ids() {
                self.tasks.spawn(replicate_to(
                    Arc::clone(&l),
                    node,
                    Arc::clone(&self.peers),
                    Arc::clone(&leadership.contact),
                    self.config.heartbeat,
                    leadership.deposed.clone(),
                    leadership.cancel.clone(),
                ));
            }
            self.tasks
                .spawn(commit_on_durable(Arc::clone(&l), leadership.cancel.clone()));
            leadership
                .led
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, l);
        }
    }

    /// Whether `leadership`'s lease holds: a majority answered its replication within the
    /// election timeout (with no partition to replicate, Raft's own heartbeats count).
    fn lease_holds(&self, leadership: &Leadership) -> bool {
        let lease = self.config.election_timeout;
        if leadership.contact.holds(lease) {
            return true;
        }
        let idle = leadership
            .led
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        idle && self
            .raft
            .metrics()
            .borrow()
            .millis_since_quorum_ack
            .is_some_and(|ms| u128::from(ms) < lease.as_millis())
    }

    /// Stops leading: no more serving, and every waiting produce is answered `not_leader`.
    fn stop_leading(&self, why: &str) {
        let old = self
            .leadership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(old) = old else { return };
        old.cancel.cancel();
        self.serving.send_replace(Serving::default());
        self.fail_waiting();
        tracing::info!(epoch = old.epoch, why, "stopped leading");
    }

    /// Answers every produce waiting for a commit point with `not_leader`.
    fn fail_waiting(&self) {
        for topic in self.broker.topics() {
            for p in topic.partitions() {
                p.fail_waiting(&StorageError::NotLeader);
            }
        }
    }

    /// Records this broker's client address in the metadata, for clients that ask who leads.
    async fn register_address(&self) {
        let addr = self.config.advertise.clone();
        if self.metadata.borrow().addresses.get(&self.config.node_id) == Some(&addr) {
            return;
        }
        let cmd = MetaCommand::SetAddress {
            node: self.config.node_id,
            address: addr,
        };
        if let Err(e) = self.raft.client_write(cmd).await {
            tracing::warn!(error = %e, "cannot record this broker's address");
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

    /// A request from a leader of `epoch`: a later epoch than the one this broker leads ends
    /// its leadership before the request changes anything.
    fn step_down_for(&self, epoch: u64) {
        if self.current_leadership().is_some_and(|l| l.epoch < epoch) {
            self.stop_leading("another broker leads a later epoch");
        }
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
        r.promise(epoch).await.map_err(replica_error)
    }

    /// Answers a leader's Replicate.
    ///
    /// # Errors
    /// When the partition is unknown here or its disk fails.
    pub async fn replicate(&self, req: ReplicateRequest) -> Result<PeerAnswer, EngineError> {
        self.step_down_for(req.epoch);
        let r = self.replica_for(&req.partition.topic, req.partition.partition)?;
        r.replicate(req.epoch, req.commit, req.records)
            .await
            .map_err(replica_error)
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

    /// This broker's view of the cluster, for `broker stats`.
    pub fn status(&self) -> serde_json::Value {
        let raft = self.raft.metrics().borrow().clone();
        let replication: Vec<serde_json::Value> = self
            .replication()
            .into_iter()
            .map(|p| {
                let followers: Vec<serde_json::Value> = p
                    .lags
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "node": l.node,
                            "lag_records": l.records,
                            "lag_seconds": l.behind.as_secs_f64(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "topic": p.topic,
                    "partition": p.partition,
                    "epoch": p.epoch,
                    "under_replicated": p.is_under_replicated(),
                    "followers": followers,
                })
            })
            .collect();
        serde_json::json!({
            "node": self.config.node_id,
            "epoch": raft.current_term,
            "leader": raft.current_leader,
            "serving": self.serving().ready,
            "members": self.config.peers.keys().collect::<Vec<_>>(),
            "replication": replication,
        })
    }

    /// Sets the cluster's gauges, just before a scrape.
    pub fn refresh_metrics(&self) {
        let m = self.broker.metrics();
        let raft = self.raft.metrics().borrow().clone();
        m.cluster_leader.set(i64::from(self.serving().ready));
        m.cluster_has_leader
            .set(i64::from(raft.current_leader.is_some()));
        m.cluster_epoch
            .set(i64::try_from(raft.current_term).unwrap_or(i64::MAX));
        // A broker that stopped leading keeps no stale series.
        m.replica_lag_records.clear();
        m.replica_lag_seconds.clear();
        m.partition_under_replicated.clear();
        for p in self.replication() {
            for lag in &p.lags {
                let l = crate::metrics::replica_labels(&p.topic, p.partition, lag.node);
                m.replica_lag_records
                    .get_or_create(&l)
                    .set(i64::try_from(lag.records).unwrap_or(i64::MAX));
                m.replica_lag_seconds
                    .get_or_create(&l)
                    .set(lag.behind.as_secs_f64());
            }
            m.partition_under_replicated
                .get_or_create(&crate::metrics::partition_labels(&p.topic, p.partition))
                .set(i64::from(p.is_under_replicated()));
        }
    }

    /// Per partition led here: how far behind each follower is (empty when not leading).
    pub fn replication(&self) -> Vec<PartitionReplication> {
        self.current_leadership().map_or_else(Vec::new, |l| {
            l.led
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|((topic, partition), led)| PartitionReplication {
                    topic: topic.clone(),
                    partition: *partition,
                    epoch: l.epoch,
                    lags: led.lags(),
                })
                .collect()
        })
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
