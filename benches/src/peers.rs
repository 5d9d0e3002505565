//! One adapter per system behind the [`crate::workload`] traits: our broker, Redis Streams,
//! NATS JetStream and RabbitMQ. Each is small on purpose, so a reader can check that it counts
//! a produce only at the acknowledgement the system gives at its configured durability.

use std::future::Future;

use crate::workload::{Producer, Receiver};

pub mod broker;
#[cfg(feature = "peers")]
pub mod nats;
#[cfg(feature = "peers")]
pub mod rabbitmq;
#[cfg(feature = "peers")]
pub mod redis;

/// The consumer group every workload reads with.
pub const GROUP: &str = "bench";

/// A system under test: how to make a stream (topic, queue) with the group [`GROUP`], connect
/// producers and group members to it, and remove it again.
pub trait System {
    /// Its producing connection.
    type Producer: Producer;
    /// Its consuming group member.
    type Receiver: Receiver;
    /// Creates the stream `name` and the group [`GROUP`] reading it from its start.
    fn create(&self, name: &str) -> impl Future<Output = anyhow::Result<()>>;
    /// Connects producer number `index` of `name`.
    fn producer(
        &self,
        name: &str,
        index: usize,
    ) -> impl Future<Output = anyhow::Result<Self::Producer>>;
    /// Connects group member number `index` of `name`.
    fn receiver(
        &self,
        name: &str,
        index: usize,
    ) -> impl Future<Output = anyhow::Result<Self::Receiver>>;
    /// Deletes the stream `name` with its group, where the system can.
    fn delete(&self, name: &str) -> impl Future<Output = anyhow::Result<()>>;
}
