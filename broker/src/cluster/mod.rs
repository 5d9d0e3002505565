//! The brokers' Raft: who leads, in which epoch, and the cluster's metadata — never records.
//!
//! The brokers of a cluster run [`openraft`] among themselves for two things only (see
//! `REPLICATION.md`): leadership, where the *epoch* of a leader is its Raft term, and the
//! cluster's metadata (its members and its topics). Records go through the replication protocol
//! of `crate::replication`, never through this Raft log.
//!
//! - [`meta`] is the replicated state and how a command changes it (pure, no I/O).
//! - [`raft_store`] keeps openraft's vote, log and snapshots durable in one directory and holds
//!   the state machine that applies [`meta::MetaCommand`]s.
//! - [`network`] carries Raft's messages over the broker protocol; [`peers`] holds the
//!   connections to the other brokers.
//! - [`replica`] is a partition's replica here, [`leader`] a partition this broker leads,
//!   [`node`] this broker's membership (Raft, its replicas, the requests it answers),
//!   `leadership` its leadership when Raft elects it, `groups` the replication of consumer-group
//!   progress, `drain` taking it out of leadership for maintenance, `join` and `catch_up` its
//!   return on a new disk, and [`observe`] what it shows of them.
//!
//! Invariants:
//! - At most one leader per term, so a term can serve as an epoch: openraft is built with its
//!   `single-term-leader` feature (workspace `Cargo.toml`). Without it openraft orders leaders
//!   by `(term, node id)` and may elect two in one term.
//! - Every node applies the same committed commands in the same order, so every node's
//!   [`meta::Metadata`] passes through the same sequence of values; `Metadata::apply` is
//!   deterministic for that reason.
//! - Raft's membership holds node ids only (every broker proposes the same one); the Raft
//!   transport finds a peer by its id in `--peers`, and clients find a broker by the address
//!   it recorded in the metadata ([`meta::MetaCommand::SetAddress`]).

mod catch_up;
mod drain;
mod groups;
mod join;
pub mod leader;
mod leadership;
pub mod meta;
pub mod network;
pub mod node;
pub mod observe;
pub mod peers;
pub mod raft_store;
pub mod replica;

openraft::declare_raft_types!(
    /// openraft's type configuration for the brokers' metadata Raft.
    pub TypeConfig:
        D = meta::MetaCommand,
        R = meta::MetaResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A broker's id in the cluster (stable for the life of its data directory).
pub type NodeId = u64;
/// What the cluster knows of a member: `addr` is the address clients use to reach it.
pub type Node = openraft::BasicNode;
/// A running Raft node of the metadata cluster.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log id: the term (epoch) and node that proposed it, and its index.
pub type LogId = openraft::LogId<NodeId>;
/// A Raft vote (term, candidate, committed or not).
pub type Vote = openraft::Vote<NodeId>;
/// An entry of the metadata Raft log.
pub type Entry = openraft::Entry<TypeConfig>;
/// A membership with the id of the log entry that set it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// What a snapshot covers: last included log id, membership, id.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot of the metadata state machine.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The Raft node's metrics (current leader, term, state), as `Raft::metrics` publishes them.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
/// The error openraft's storage traits return; openraft stops the node on any of them.
pub type RaftStorageError = openraft::StorageError<NodeId>;
