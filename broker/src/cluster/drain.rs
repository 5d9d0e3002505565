//! Draining a broker before maintenance: it gives up leading and stands for no election, so
//! that stopping it later is not a failover (`REPLICATION.md`, "Draining a broker").
//!
//! openraft 0.9 has no leadership transfer, so a draining leader stops sending Raft
//! heartbeats: the followers' election timers run out and one of them is elected, and the
//! drained broker, which may no longer stand, follows it. Until the new leader's promises
//! fence it, the drained broker still serves, so clients see about one election timeout of
//! waiting and `not_leader` for produces in flight, which they send again. A drain lasts until
//! it is taken back or the broker restarts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;

use super::node::Cluster;
use crate::engine::EngineError;
use crate::protocol::peer::Metadata;

impl Cluster {
    /// Whether this broker is drained.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Drains this broker (`on`) or takes it back, and answers once another broker leads (or
    /// at once, to take it back).
    ///
    /// # Errors
    /// When no other broker was elected within ten election timeouts (is a majority up?):
    /// the broker stays drained and leads on meanwhile.
    pub async fn drain(&self, on: bool) -> Result<Metadata, EngineError> {
        self.draining.store(on, Ordering::Release);
        let runtime = self.raft.runtime_config();
        runtime.elect(self.may_stand());
        if !on {
            runtime.heartbeat(true);
            tracing::info!(
                node = self.config.node_id,
                "taken back from drain: may be elected again"
            );
            return Ok(self.metadata());
        }
        tracing::info!(
            node = self.config.node_id,
            "draining: stands for no election"
        );
        let wait = (self.config.election_timeout * 10).max(Duration::from_secs(5));
        let me = self.config.node_id;
        let mut metrics = self.raft.metrics();
        if metrics.borrow().state == ServerState::Leader {
            tracing::info!(
                "draining the leader: Raft heartbeats stop until another broker is elected"
            );
            runtime.heartbeat(false);
            let stepped_down =
                tokio::time::timeout(wait, metrics.wait_for(|m| m.state != ServerState::Leader))
                    .await;
            runtime.heartbeat(true);
            if stepped_down.is_err() {
                return Err(EngineError::NotLeader(format!(
                    "node {me} is drained but still leads after {wait:?}: no other broker was elected (is a majority up?)"
                )));
            }
        }
        // Answered once another broker leads and serves (the metadata names a leader only
        // then), so that the operator may stop this one.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = self.metadata();
            if m.leader.as_ref().is_some_and(|(id, _)| *id != me) {
                return Ok(m);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::NotLeader(format!(
                    "node {me} is drained, but no other broker leads after {wait:?} (is a majority up?)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
