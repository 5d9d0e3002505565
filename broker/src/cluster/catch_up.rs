//! How a broker that joined on a new disk catches up (`join.rs` has why): it copies the
//! leader's consumer groups once every topic the leader has exists here, waits until every
//! replica has held its leader's commit point, and then stands for election again.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::NodeId;
use super::join::{self, JoinState};
use super::node::Cluster;
use crate::engine::EngineError;
use crate::protocol::peer::PeerAnswer;
use crate::protocol::peer_groups::ReadGroupsRequest;
use crate::protocol::{Request, Response};
use crate::storage::StorageError;

impl Cluster {
    fn join_state(&self) -> Option<JoinState> {
        *self.join.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_join_state(&self, state: JoinState) -> Result<(), StorageError> {
        join::save(&**self.broker.host().disk(), &self.raft_dir(), state)?;
        *self.join.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
        Ok(())
    }

    pub(super) fn raft_dir(&self) -> PathBuf {
        super::raft_store::dir(&self.broker.config().data_dir)
    }

    /// While a join is under way, the epoch it learned: a replica opened meanwhile starts
    /// promised to it and catching up.
    pub(super) fn joining_epoch(&self) -> Option<u64> {
        self.join_state().filter(|j| !j.done).map(|j| j.epoch)
    }

    /// Whether this broker may stand for election: not while drained or joining.
    pub(super) fn may_stand(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.joining_epoch().is_none()
    }

    /// Whether this broker's copy of the groups may count towards a new leader's majority.
    pub(super) fn groups_copied(&self) -> bool {
        self.join_state().is_none_or(|j| j.groups_copied)
    }

    /// Finishes a join: copies the leader's groups once every topic the leader has exists
    /// here, then waits for every replica to catch up, then stands for election again.
    pub(super) async fn finish_join(self: Arc<Self>) {
        let me = self.config.node_id;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(mut state) = self.join_state().filter(|j| !j.done) else {
                return;
            };
            let (leader, epoch) = {
                let m = self.raft.metrics().borrow().clone();
                (m.current_leader.filter(|l| *l != me), m.current_term)
            };
            let Some(leader) = leader else { continue };
            let Some(topics) = self.leader_topics(leader).await else {
                continue;
            };
            if topics.iter().any(|t| self.broker.topic(t).is_none()) {
                continue; // Raft's log is still being replayed here.
            }
            if !state.groups_copied {
                if let Err(e) = self.copy_groups(leader, epoch, &topics).await {
                    tracing::debug!(error = %e, "copying the groups from the leader; will retry");
                    continue;
                }
                state.groups_copied = true;
                if let Err(e) = self.set_join_state(state) {
                    tracing::error!(error = %e, "cannot record the join's progress");
                    continue;
                }
                tracing::info!(
                    leader,
                    "joining: copied every consumer group from the leader"
                );
            }
            let mut behind = 0;
            for r in self.all_replicas() {
                if r.is_catching_up().await {
                    behind += 1;
                }
            }
            if behind > 0 {
                continue;
            }
            state.done = true;
            if let Err(e) = self.set_join_state(state) {
                tracing::error!(error = %e, "cannot record the end of the join");
                continue;
            }
            self.raft.runtime_config().elect(self.may_stand());
            tracing::info!(
                node = me,
                "joined: every replica caught up and the groups copied; a member like any other"
            );
            return;
        }
    }

    /// The names of the leader's topics, from its stats.
    async fn leader_topics(&self, leader: NodeId) -> Option<Vec<String>> {
        let answer = self
            .peers
            .call(
                leader,
                Request::Stats {
                    topic: String::new(),
                },
            )
            .await
            .ok()?;
        let Response::Stats(json) = answer else {
            return None;
        };
        let stats: serde_json::Value = serde_json::from_slice(&json).ok()?;
        Some(
            stats["topics"]
                .as_array()?
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect(),
        )
    }

    async fn copy_groups(
        &self,
        leader: NodeId,
        epoch: u64,
        topics: &[String],
    ) -> Result<(), EngineError> {
        for name in topics {
            let topic = self
                .broker
                .topic(name)
                .ok_or_else(|| EngineError::UnknownTopic(name.clone()))?;
            let req = Request::ReadGroups(ReadGroupsRequest {
                epoch,
                topic: name.clone(),
            });
            let copies = match self.peers.call(leader, req).await {
                Ok(Response::Peer(PeerAnswer::Groups(copies))) => copies,
                Ok(other) => {
                    return Err(EngineError::NotLeader(format!(
                        "node {leader} answered {other:?} to read groups"
                    )));
                }
                Err(e) => return Err(EngineError::NotLeader(e.to_string())),
            };
            for copy in copies {
                self.broker.restart_group(&topic, copy).await?;
            }
        }
        Ok(())
    }
}
