//! A partition led by this broker: its recovery at the start of an epoch, and the tasks that
//! replicate it to each follower and move its commit point (`REPLICATION.md`, steps 1 to 4).
//!
//! Recovery holds the replica's lock from the promise to the new epoch's entry, so nothing
//! else changes the local log meanwhile. Then one task per follower sends what the follower
//! lacks (or an empty append every heartbeat), and one task moves the commit point when the
//! leader's own log becomes durable. Every answer is also *contact*: a leader that has not
//! heard from a majority within the election timeout stops serving (its lease ran out).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::NodeId;
use super::peers::Peers;
use super::replica::{MAX_BATCH_RECORDS, Replica, ReplicaError};
use crate::protocol::peer::{
    LogState, PartitionRef, PeerAnswer, PromiseRequest, ReadReplicaRequest, ReplicateRequest,
};
use crate::protocol::{Request, Response};
use crate::replication::epochs::{Epoch, EpochHistory, divergence};
use crate::replication::replica::{Leader, Promised, Recovery};

/// Why a partition's recovery did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// A replica promised a later epoch: another broker leads now.
    #[error("a replica promised epoch {0}: this broker no longer leads")]
    Deposed(Epoch),
    /// Too few replicas answered.
    #[error("only {answered} of {replicas} replicas answered the promise request")]
    NoMajority {
        /// How many answered (this one included).
        answered: usize,
        /// How many there are.
        replicas: usize,
    },
    /// The copy from the most recent replica failed.
    #[error("copying from node {node}: {message}")]
    Copy {
        /// The replica copied from.
        node: NodeId,
        /// What failed.
        message: String,
    },
    /// The local replica failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

/// Contact with the other brokers in this epoch: when each last answered.
#[derive(Debug)]
pub struct Contact {
    heard: Mutex<BTreeMap<NodeId, Instant>>,
    replicas: usize,
}

impl Contact {
    /// No contact yet, among `replicas` brokers.
    pub fn new(replicas: usize) -> Self {
        Self {
            heard: Mutex::new(BTreeMap::new()),
            replicas,
        }
    }

    /// `node` answered.
    pub fn heard(&self, node: NodeId) {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, Instant::now());
    }

    /// Whether a majority (this broker included) was heard within `lease`.
    pub fn holds(&self, lease: Duration) -> bool {
        let now = Instant::now();
        let recent = self
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|t| now.duration_since(**t) < lease)
            .count();
        recent + 1 > self.replicas / 2
    }
}

fn promised(state: &LogState) -> Result<Promised, String> {
    Ok(Promised {
        history: EpochHistory::from_entries(state.epochs.clone())?,
        log_start: state.log_start,
        end: state.end,
    })
}

/// How long a follower may go without holding everything the leader wrote before it counts
/// as out of sync (the partition is then under-replicated).
pub const REPLICA_LAG_TIME: Duration = Duration::from_secs(5);

/// A partition this broker leads in `epoch`.
#[derive(Debug)]
pub struct LedPartition {
    replica: Arc<Replica>,
    epoch: Epoch,
    leader: Mutex<Leader>,
    /// When each follower last held everything written here.
    caught_up: Mutex<BTreeMap<NodeId, Instant>>,
    since: Instant,
}

/// A follower of a partition led here, as the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerLag {
    /// The follower.
    pub node: NodeId,
    /// Records it lacks.
    pub records: u64,
    /// Since it last confirmed it held everything written here (or since the epoch began):
    /// a heartbeat's interval or so for a follower in sync, growing for one that is behind or
    /// silent.
    pub behind: Duration,
}

impl LedPartition {
    /// Its replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    fn partition_ref(&self) -> PartitionRef {
        PartitionRef {
            topic: self.replica.topic_name().to_string(),
            partition: self.replica.index(),
        }
    }

    fn with_leader<T>(&self, f: impl FnOnce(&mut Leader) -> T) -> T {
        f(&mut self.leader.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Moves the commit point to what a majority holds.
    fn commit(&self) {
        let durable = self.replica.partition().durable().borrow().end;
        let c = self.with_leader(|l| l.commit(durable));
        self.replica.partition().advance_commit(c);
    }

    /// How far behind each follower is.
    pub fn lags(&self) -> Vec<FollowerLag> {
        let end = self.replica.partition().written_end();
        let caught_up = self
            .caught_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now = Instant::now();
        self.with_leader(|l| {
            l.replicas()
                .iter()
                .filter_map(|n| {
                    let records = l.lag(*n, end)?;
                    let since = caught_up.get(n).copied().unwrap_or(self.since);
                    Some(FollowerLag {
                        node: *n,
                        records,
                        behind: now.duration_since(since),
                    })
                })
                .collect()
        })
    }

    fn caught_up(&self, node: NodeId) {
        self.caught_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, Instant::now());
    }
}

/// Recovers `replica` for `epoch` (promises from a majority, the most recent log copied),
/// and starts the epoch: the partition is then led here.
///
/// # Errors
/// When this broker is deposed, a majority does not answer, or a copy or write fails.
pub async fn recover(
    replica: Arc<Replica>,
    epoch: Epoch,
    peers: &Peers,
    contact: &Contact,
) -> Result<LedPartition, RecoverError> {
    let me = peers.me();
    let mut replicas = peers.ids();
    replicas.push(me);
    replicas.sort_unstable();
    let part = PartitionRef {
        topic: replica.topic_name().to_string(),
        partition: replica.index(),
    };
    let mut meta = replica.lock().await;
    replica.promise_own(&mut meta, epoch)?;
    let mut recovery = Recovery::new(epoch, me, replicas.clone());
    recovery.promised(me, Promised::of(&replica.state(&meta)));
    // Promises are asked of every replica; recovery goes on as soon as a majority answered
    // (a dead replica must not hold up a failover).
    let mut asks: futures_util::stream::FuturesUnordered<_> = peers
        .ids()
        .into_iter()
        .map(|node| {
            let req = Request::Promise(PromiseRequest {
                epoch,
                partition: part.clone(),
            });
            async move { (node, peers.call(node, req).await) }
        })
        .collect();
    while recovery.best().is_none() {
        let Some((node, answer)) = futures_util::StreamExt::next(&mut asks).await else {
            break;
        };
        match answer {
            Ok(Response::Peer(PeerAnswer::Promised(state))) => {
                contact.heard(node);
                if let Ok(p) = promised(&state) {
                    recovery.promised(node, p);
                }
            }
            Ok(Response::Peer(PeerAnswer::Stale { promised })) => {
                return Err(RecoverError::Deposed(promised));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(node, error = %e, topic = part.topic, partition = part.partition, "no promise");
            }
        }
    }
    drop(asks);
    let Some((best, answer)) = recovery.best().map(|(n, a)| (n, a.clone())) else {
        return Err(RecoverError::NoMajority {
            answered: recovery.answers().len(),
            replicas: replicas.len(),
        });
    };
    if best != me {
        let mine = replica.state(&meta);
        let d = divergence(&mine.history, mine.end, &answer.history, answer.end);
        if d < mine.end {
            replica
                .cut(&mut meta, d)
                .await
                .map_err(|e| RecoverError::Replica(e.into()))?;
        }
        loop {
            let end = replica.state(&meta).end;
            if end >= answer.end {
                break;
            }
            let copy_err = |message: String| RecoverError::Copy {
                node: best,
                message,
            };
            let read = peers
                .call(
                    best,
                    Request::ReadReplica(ReadReplicaRequest {
                        epoch,
                        partition: part.clone(),
                        from: end,
                        max_records: u32::try_from(MAX_BATCH_RECORDS).unwrap_or(u32::MAX),
                    }),
                )
                .await
                .map_err(|e| copy_err(e.to_string()))?;
            let records = match read {
                Response::Peer(PeerAnswer::Records(r)) if !r.records.is_empty() => r,
                Response::Peer(PeerAnswer::Stale { promised }) => {
                    return Err(RecoverError::Deposed(promised));
                }
                other => return Err(copy_err(format!("unexpected answer {other:?}"))),
            };
            match replica.apply(&mut meta, epoch, 0, records).await? {
                PeerAnswer::Appended { .. } => {}
                other => return Err(copy_err(format!("the copy did not apply: {other:?}"))),
            }
        }
        tracing::info!(
            topic = part.topic,
            partition = part.partition,
            from = best,
            "recovered the most recent log from another replica"
        );
    }
    let start = replica.begin_epoch(&mut meta, epoch)?;
    let mine = replica.state(&meta);
    let mut leader = Leader::new(epoch, me, replicas, start);
    for (node, answer) in recovery.answers() {
        leader.learned(*node, answer, &mine);
    }
    drop(meta);
    Ok(LedPartition {
        replica,
        epoch,
        leader: Mutex::new(leader),
        caught_up: Mutex::new(BTreeMap::new()),
        since: Instant::now(),
    })
}

/// Replicates `led` to `node` until `cancel`: what it lacks as soon as it is written here,
/// an empty append every `heartbeat` otherwise.
pub async fn replicate_to(
    led: Arc<LedPartition>,
    node: NodeId,
    peers: Arc<Peers>,
    contact: Arc<Contact>,
    heartbeat: Duration,
    deposed: CancellationToken,
    cancel: CancellationToken,
) {
    let mut written = led.replica.partition().written();
    let mut backoff = Duration::from_millis(10);
    let mut reported_behind_start = false;
    while !cancel.is_cancelled() {
        let (request, written_end) = {
            let meta = led.replica.lock().await;
            let state = led.replica.written_state(&meta);
            let behind_start = led.with_leader(|l| l.needs_reset(node, &state));
            if behind_start && !reported_behind_start {
                tracing::warn!(
                    node,
                    topic = led.replica.topic_name(),
                    partition = led.replica.index(),
                    log_start = state.log_start,
                    "a follower lacks records retention deleted here: it starts its log again at this log's start (REPLICATION.md, \"Retention\")"
                );
            }
            reported_behind_start = behind_start;
            let Some(append) = led.with_leader(|l| l.next_append(node, &state, MAX_BATCH_RECORDS))
            else {
                return;
            };
            match led
                .replica
                .records(&state, led.epoch, append.start, append.count)
            {
                Ok(records) => {
                    let sent_to = records.start + records.records.len() as u64;
                    led.with_leader(|l| l.sent(node, sent_to));
                    let request = ReplicateRequest {
                        epoch: led.epoch,
                        partition: led.partition_ref(),
                        commit: led.replica.partition().readable_end(),
                        records,
                    };
                    (request, state.end)
                }
                Err(e) => {
                    tracing::error!(node, error = %e, "cannot read records to replicate");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(heartbeat) => continue,
                    }
                }
            }
        };
        let had_records = !request.records.records.is_empty();
        let answer = tokio::select! {
            () = cancel.cancelled() => return,
            a = peers.call(node, Request::Replicate(request)) => a,
        };
        match answer {
            Ok(Response::Peer(PeerAnswer::Appended { matched })) => {
                contact.heard(node);
                backoff = Duration::from_millis(10);
                // It holds everything written here when this was sent: in sync.
                if matched >= written_end {
                    led.caught_up(node);
                }
                led.with_leader(|l| l.appended(node, matched));
                led.commit();
            }
            Ok(Response::Peer(PeerAnswer::Mismatch(state))) => {
                contact.heard(node);
                if let Ok(p) = promised(&state) {
                    let meta = led.replica.lock().await;
                    let mine = led.replica.written_state(&meta);
                    led.with_leader(|l| l.learned(node, &p, &mine));
                }
                continue;
            }
            Ok(Response::Peer(PeerAnswer::Stale { promised })) => {
                tracing::info!(
                    node,
                    promised,
                    epoch = led.epoch,
                    "a follower promised a later epoch: stepping down"
                );
                deposed.cancel();
                return;
            }
            Ok(_) | Err(_) => {
                // Unreachable or failed: start again from what it last confirmed.
                led.with_leader(|l| l.rewind(node));
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(heartbeat);
                continue;
            }
        }
        if had_records
            && led.with_leader(|l| l.has_more(node, led.replica.partition().written_end()))
        {
            continue;
        }
        // Caught up: wait for new records or the next heartbeat.
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = written.changed() => {}
            () = tokio::time::sleep(heartbeat) => {}
        }
    }
}

/// Moves `led`'s commit point whenever its log becomes durable here, until `cancel`.
pub async fn commit_on_durable(led: Arc<LedPartition>, cancel: CancellationToken) {
    let mut durable = led.replica.partition().durable();
    loop {
        led.commit();
        tokio::select! {
            () = cancel.cancelled() => return,
            r = durable.changed() => if r.is_err() { return },
        }
    }
}
