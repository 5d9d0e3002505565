//! Consumer-group progress in a cluster (`REPLICATION.md`, "Consumer groups").
//!
//! The leader sends every group-journal entry (done offsets, delivery counts, count marks) to
//! the followers and answers the consumer only once a majority holds it on disk. Progress only
//! grows, so copies merge by union (`crate::groups::progress`): a new leader reads the copy of
//! every broker of a majority, merges them with its own and starts each group from the
//! result, which holds every entry a majority acknowledged.
//!
//! The fence: a broker takes entries only from a leader of an epoch no older than the latest
//! it has seen, and a new leader's read raises that epoch (and promises it on the topic's
//! partitions, so it holds across a restart) under a lock that waits for entries being
//! written. An entry a deposed leader gets acknowledged is therefore either in the new
//! leader's read or refused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::node::{Cluster, Leadership};
use crate::engine::group_replication::{GroupReplication, ReplicationError};
use crate::engine::{EngineError, Topic};
use crate::groups::journal::Entry;
use crate::groups::{GroupConfig, PartitionProgress};
use crate::protocol::peer::PeerAnswer;
use crate::protocol::peer_groups::{GroupCopy, GroupProgressRequest, ReadGroupsRequest};
use crate::protocol::{Request, Response};

/// Why a new leader could not read the groups of a topic.
#[derive(Debug, thiserror::Error)]
pub(super) enum GroupRecoverError {
    /// A broker saw a later epoch.
    #[error("a broker saw epoch {0}: this broker no longer leads")]
    Deposed(u64),
    /// Too few brokers answered.
    #[error("only {answered} of {brokers} brokers gave their copy of the groups")]
    NoMajority {
        /// How many answered (this one included).
        answered: usize,
        /// How many there are.
        brokers: usize,
    },
    /// A group could not be started from the merged progress.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The engine's way to this cluster's group replication (weak: the broker does not keep the
/// cluster alive).
#[derive(Debug)]
struct GroupReplicator(Weak<Cluster>);

impl GroupReplication for GroupReplicator {
    fn replicate(
        &self,
        topic: &str,
        group: &str,
        config: GroupConfig,
        entries: Vec<Entry>,
    ) -> BoxFuture<'static, Result<(), ReplicationError>> {
        let cluster = self.0.upgrade();
        let (topic, group) = (topic.to_string(), group.to_string());
        Box::pin(async move {
            let c = cluster.ok_or(ReplicationError::ShuttingDown)?;
            c.replicate_group(topic, group, config, entries).await
        })
    }
}

impl Cluster {
    /// Makes the broker send every group's progress through this cluster.
    pub(super) fn replicate_group_progress(self: &Arc<Self>) {
        self.broker
            .set_group_replication(Arc::new(GroupReplicator(Arc::downgrade(self))));
    }

    /// The latest epoch a leader asked this broker for (or this broker led).
    pub(super) fn saw_epoch(&self, epoch: u64) {
        self.fence.fetch_max(epoch, Ordering::AcqRel);
    }

    fn fence(&self) -> u64 {
        self.fence.load(Ordering::Acquire)
    }

    /// Sends entries of a group to every follower; resolves once a majority (this broker
    /// included) holds them. The calls to followers still on their way go on after that.
    async fn replicate_group(
        &self,
        topic: String,
        group: String,
        config: GroupConfig,
        entries: Vec<Entry>,
    ) -> Result<(), ReplicationError> {
        let Some(leadership) = self.current_leadership() else {
            return Err(ReplicationError::NotLeader(
                "this broker stopped leading before the group's progress was replicated".into(),
            ));
        };
        let need = self.config.peers.len() / 2;
        let req = GroupProgressRequest {
            epoch: leadership.epoch,
            topic,
            group,
            config,
            entries,
        };
        let ids = self.peers.ids();
        let (tx, mut rx) = tokio::sync::mpsc::channel(ids.len().max(1));
        for node in ids {
            let peers = Arc::clone(&self.peers);
            let req = Request::GroupProgress(req.clone());
            let tx = tx.clone();
            self.tasks.spawn(async move {
                let _ = tx.send((node, peers.call(node, req).await)).await;
            });
        }
        drop(tx);
        let mut held = 0;
        while held < need {
            let Some((node, answer)) = rx.recv().await else {
                break;
            };
            match answer {
                Ok(Response::Peer(PeerAnswer::GroupWritten)) => {
                    leadership.contact.heard(node);
                    held += 1;
                }
                Ok(Response::Peer(PeerAnswer::Stale { promised })) => {
                    leadership.deposed.cancel();
                    return Err(ReplicationError::NotLeader(format!(
                        "node {node} saw epoch {promised}: this broker no longer leads"
                    )));
                }
                Ok(other) => {
                    tracing::warn!(node, answer = ?other, "unexpected answer to group progress");
                }
                Err(e) => tracing::debug!(node, error = %e, "group progress not replicated"),
            }
        }
        if held < need {
            return Err(ReplicationError::NotLeader(format!(
                "the group's progress reached {held} of the {need} other brokers a majority needs"
            )));
        }
        Ok(())
    }

    /// Answers a leader's GroupProgress: takes the entries unless a later epoch was seen.
    ///
    /// # Errors
    /// When the topic is unknown here or the group's journal fails.
    pub async fn group_progress(
        &self,
        req: GroupProgressRequest,
    ) -> Result<PeerAnswer, EngineError> {
        let _writing = self.group_fence.read().await;
        let fence = self.fence();
        if req.epoch < fence {
            return Ok(PeerAnswer::Stale { promised: fence });
        }
        self.step_down_for(req.epoch);
        self.saw_epoch(req.epoch);
        let topic = self.topic_here(&req.topic)?;
        self.broker
            .absorb_group(&topic, &req.group, req.config, req.entries)
            .await?;
        Ok(PeerAnswer::GroupWritten)
    }

    /// Answers a new leader's ReadGroups: fences older leaders, then gives every group of the
    /// topic.
    ///
    /// # Errors
    /// When the topic is unknown here or a promise cannot be written.
    pub async fn read_groups(&self, req: ReadGroupsRequest) -> Result<PeerAnswer, EngineError> {
        if !self.groups_copied() {
            return Err(EngineError::NotLeader(
                "this broker joined on a new disk and has not copied the groups yet: its copy does not count".into(),
            ));
        }
        let _fencing = self.group_fence.write().await;
        let fence = self.fence();
        if req.epoch < fence {
            return Ok(PeerAnswer::Stale { promised: fence });
        }
        self.step_down_for(req.epoch);
        let topic = self.topic_here(&req.topic)?;
        for p in 0..topic.partitions().len() {
            let partition = u32::try_from(p).unwrap_or(u32::MAX);
            if let PeerAnswer::Stale { promised } =
                self.promise(req.epoch, &req.topic, partition).await?
            {
                return Ok(PeerAnswer::Stale { promised });
            }
        }
        self.saw_epoch(req.epoch);
        Ok(PeerAnswer::Groups(self.broker.group_copies(&topic)))
    }

    fn topic_here(&self, name: &str) -> Result<Arc<Topic>, EngineError> {
        self.broker.topic(name).ok_or_else(|| {
            EngineError::UnknownTopic(format!(
                "{name} (not created here yet: its creation is still being applied)"
            ))
        })
    }

    /// Starts every group of every topic from a majority's merged progress (a new leader,
    /// before it serves); retries a topic until it works or the leadership ends.
    ///
    /// # Errors
    /// When a broker saw a later epoch.
    pub(super) async fn recover_groups(
        &self,
        leadership: &Arc<Leadership>,
    ) -> Result<(), GroupRecoverError> {
        for topic in self.broker.topics() {
            let mut backoff = Duration::from_millis(20);
            loop {
                if leadership.cancel.is_cancelled() || leadership.deposed.is_cancelled() {
                    return Ok(());
                }
                match self.recover_topic_groups(leadership.epoch, &topic).await {
                    Ok(()) => break,
                    Err(GroupRecoverError::Deposed(e)) => {
                        return Err(GroupRecoverError::Deposed(e));
                    }
                    Err(e) => {
                        tracing::warn!(topic = topic.name(), error = %e, "group recovery failed; retrying");
                        tokio::select! {
                            () = leadership.cancel.cancelled() => return Ok(()),
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
        Ok(())
    }

    async fn recover_topic_groups(
        &self,
        epoch: u64,
        topic: &Arc<Topic>,
    ) -> Result<(), GroupRecoverError> {
        let mut merged: std::collections::BTreeMap<String, GroupCopy> = self
            .broker
            .group_copies(topic)
            .into_iter()
            .map(|g| (g.name.clone(), g))
            .collect();
        let brokers = self.config.peers.len();
        let mut answered = 1;
        let mut asks: futures_util::stream::FuturesUnordered<_> = self
            .peers
            .ids()
            .into_iter()
            .map(|node| {
                let req = Request::ReadGroups(ReadGroupsRequest {
                    epoch,
                    topic: topic.name().to_string(),
                });
                async move { (node, self.peers.call(node, req).await) }
            })
            .collect();
        while answered <= brokers / 2 {
            let Some((node, answer)) = futures_util::StreamExt::next(&mut asks).await else {
                break;
            };
            match answer {
                Ok(Response::Peer(PeerAnswer::Groups(copies))) => {
                    answered += 1;
                    for copy in copies {
                        match merged.get_mut(&copy.name) {
                            Some(mine) => {
                                PartitionProgress::merge_all(&mut mine.progress, &copy.progress);
                            }
                            None => {
                                merged.insert(copy.name.clone(), copy);
                            }
                        }
                    }
                }
                Ok(Response::Peer(PeerAnswer::Stale { promised })) => {
                    return Err(GroupRecoverError::Deposed(promised));
                }
                Ok(other) => {
                    tracing::warn!(node, answer = ?other, "unexpected answer to read groups")
                }
                Err(e) => {
                    tracing::debug!(node, error = %e, topic = topic.name(), "no copy of the groups")
                }
            }
        }
        drop(asks);
        if answered <= brokers / 2 {
            return Err(GroupRecoverError::NoMajority { answered, brokers });
        }
        for copy in merged.into_values() {
            self.broker.restart_group(topic, copy).await?;
        }
        Ok(())
    }
}
