//! ticketrush's broker: a durable append-log job broker.
//!
//! Producers append records to topics of P partitions; consumer groups pull them as leased
//! deliveries, acknowledge or reject them, and failed records are retried and dead-lettered.
//! See the crate README for operating it and `PROTOCOL.md` for the wire format.

pub mod cli;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod engine;
pub mod groups;
pub mod metrics;
pub mod planted;
pub mod protocol;
pub mod replication;
pub mod server;
#[cfg(feature = "simulation")]
pub mod sim;
pub mod storage;
#[cfg(feature = "test-util")]
pub mod testing;

pub use engine::syncer::sync_on_park;
