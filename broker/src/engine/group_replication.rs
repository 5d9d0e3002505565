//! Where consumer-group progress goes besides the group's own journal: in a cluster, to the
//! other brokers, so that a new leader starts from what a majority holds (`REPLICATION.md`,
//! "Consumer groups"). A single broker has none and keeps its journal only.

use futures_util::future::BoxFuture;

use crate::groups::GroupConfig;
use crate::groups::journal::Entry;

/// Why group progress was not replicated.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// Too few brokers took it, or this broker no longer leads.
    #[error("{0}")]
    NotLeader(String),
    /// The cluster is stopping.
    #[error("the cluster is shutting down")]
    ShuttingDown,
}

/// Sends a group's journal entries to the other brokers of a cluster.
pub trait GroupReplication: Send + Sync + std::fmt::Debug {
    /// Sends `entries` of group `group` (created with `config`) of topic `topic`; resolves once
    /// enough other brokers hold them that, with this one, a majority does.
    fn replicate(
        &self,
        topic: &str,
        group: &str,
        config: GroupConfig,
        entries: Vec<Entry>,
    ) -> BoxFuture<'static, Result<(), ReplicationError>>;
}
