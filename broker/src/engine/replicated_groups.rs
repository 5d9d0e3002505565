//! Consumer groups as a cluster replicates them: progress made durable on a majority, a group
//! created on a follower by its leader's entries, and a new leader's restart of each group from
//! a majority's merged progress (`crate::cluster` drives these; `REPLICATION.md`).

use std::sync::{Arc, PoisonError};

use super::group_replication::{GroupReplication, ReplicationError};
use super::group_runtime::Group;
use super::{Broker, EngineError, Topic};
use crate::groups::GroupConfig;
use crate::groups::journal::Entry;
use crate::protocol::peer_groups::GroupCopy;

impl From<ReplicationError> for EngineError {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::NotLeader(m) => Self::NotLeader(m),
            ReplicationError::ShuttingDown => Self::ShuttingDown,
        }
    }
}

impl Broker {
    /// Sends every group's progress through `r` from now on (a cluster member's).
    pub fn set_group_replication(&self, r: Arc<dyn GroupReplication>) {
        if self.group_replication.set(r).is_err() {
            tracing::warn!("group replication was already set; the first one stays");
        }
    }

    /// Makes `entries` of `group` durable: in its journal and, in a cluster, on a majority.
    pub(super) async fn persist_group(
        &self,
        topic: &Topic,
        group: &Group,
        entries: Vec<Entry>,
    ) -> Result<(), EngineError> {
        if entries.is_empty() {
            return Ok(());
        }
        let Some(r) = self.group_replication.get() else {
            return group
                .persist(entries)
                .await
                .map_err(|_| EngineError::ShuttingDown)?
                .map_err(EngineError::from);
        };
        let config = group.state().config();
        let remote = r.replicate(topic.name(), group.name(), config, entries.clone());
        let (local, remote) = tokio::join!(group.persist(entries), remote);
        local.map_err(|_| EngineError::ShuttingDown)??;
        Ok(remote?)
    }

    /// The group `name` of `topic`, created with `config` if it does not exist (the stored
    /// configuration of an existing group wins).
    ///
    /// # Errors
    /// When its files cannot be created or read.
    pub async fn ensure_group(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        name: &str,
        config: GroupConfig,
    ) -> Result<Arc<Group>, EngineError> {
        if let Some(g) = topic.group(name) {
            return Ok(g);
        }
        let _guard = topic.group_create.lock().await;
        if let Some(g) = topic.group(name) {
            return Ok(g);
        }
        let this = Arc::clone(self);
        let t = Arc::clone(topic);
        let owned = name.to_string();
        let g = self
            .host
            .blocking(move || this.open_group(&t, &owned, config))
            .await
            .ok_or(EngineError::ShuttingDown)??;
        tracing::info!(topic = %topic.name, group = name, mode = config.mode.name(), "created group");
        topic
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), Arc::clone(&g));
        Ok(g)
    }

    /// Every group of `topic` with its durable progress, as a new leader asks for it.
    pub fn group_copies(&self, topic: &Topic) -> Vec<GroupCopy> {
        topic
            .groups()
            .into_iter()
            .map(|g| {
                let st = g.state();
                GroupCopy {
                    name: g.name().to_string(),
                    config: st.config(),
                    progress: st.progress(),
                }
            })
            .collect()
    }

    /// Takes in progress another broker wrote of group `name` (created with `config` if new):
    /// its journal first, then its state.
    ///
    /// # Errors
    /// When the group cannot be opened or its journal fails.
    pub async fn absorb_group(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        name: &str,
        config: GroupConfig,
        entries: Vec<Entry>,
    ) -> Result<(), EngineError> {
        let group = self.ensure_group(topic, name, config).await?;
        let progress = crate::groups::journal::progress_of(&entries, topic.partitions.len());
        group
            .persist(entries)
            .await
            .map_err(|_| EngineError::ShuttingDown)??;
        group.state().absorb(&progress);
        Ok(())
    }

    /// Starts group `copy.name` of `topic` afresh from its progress merged with this broker's
    /// (a new leader, with what a majority holds). Deliveries handed out before are forgotten:
    /// they go out again.
    ///
    /// # Errors
    /// When the group cannot be opened or the merged progress cannot be written.
    pub async fn restart_group(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        copy: GroupCopy,
    ) -> Result<(), EngineError> {
        let group = self.ensure_group(topic, &copy.name, copy.config).await?;
        group.restart_from(copy.progress).await?;
        topic.skip_deleted(&group);
        topic.notify.notify_waiters();
        Ok(())
    }
}
