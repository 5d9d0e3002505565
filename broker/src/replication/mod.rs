//! Replication of a partition's log across brokers: the protocol's rules, apart from I/O.
//!
//! - [`epochs`]: which leader epoch wrote each stretch of a log, and where two logs diverge.
//! - [`replica`]: what a replica decides for each request, and what a leader tracks while it
//!   recovers and replicates.
//! - [`store`]: where a replica keeps its promise and labels on disk.
//! - `sim` (feature `simulation`): a deterministic simulation of a cluster running the
//!   protocol over a network that drops, delays, repeats and reorders messages, cuts links,
//!   crashes nodes and elects leaders at will; it checks that no committed record is lost.
//!   `sim_options` holds what a run takes and gives back.
//!
//! `REPLICATION.md` (beside the crate's README) has the design and its failure model.

pub mod epochs;
pub mod replica;
#[cfg(feature = "simulation")]
pub mod sim;
#[cfg(feature = "simulation")]
pub mod sim_options;
pub mod store;
