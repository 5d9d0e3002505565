//! The purchase queue as the API and the workers see it, and an in-memory implementation.
//!
//! The API [`PurchaseQueue::enqueue`]s a job durably and learns its position (its offset in the
//! event's partition); the workers open a [`JobConsumer`] on a [`Lane`], fetch batches, and ack
//! or nack them. The production implementation is the broker client (topic `purchases`, key =
//! event id, dedup id = purchase id, `ordered` consumer group; dead letters in `purchases.dlq`);
//! [`MemoryQueue`] implements the same contract for tests.
//!
//! Layout: `contract` (the traits, the rules every implementation keeps, and the values they
//! pass), `error` ([`QueueError`]), `broker_queue` and `memory` (the two implementations),
//! `producer` (the API's pool of producing connections, which the waiting room's line shares).

mod broker_queue;
mod contract;
mod error;
mod memory;
pub(crate) mod producer;

pub use broker_queue::backlog_of;
pub use broker_queue::{BrokerConsumer, BrokerQueue, BrokerQueueConfig};
pub use contract::{Backlog, Delivery, DeliveryTag, Enqueued, JobConsumer, Lane, PurchaseQueue};
pub use error::QueueError;
pub use memory::{MemoryConsumer, MemoryQueue, MemoryQueueConfig, QueueStats, partition_of};
