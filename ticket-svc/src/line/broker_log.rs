//! The production [`LineLog`]: each event's line is a topic of its own in the broker,
//! `line.{event id}`, with one partition, so a join's offset is its sequence. Joins carry the
//! dedup id `join/{visitor}` and the seal `seal`, so a visitor joining twice (or two instances
//! sealing at once) within the broker's dedup window get the first offset back. Appends go
//! through the API's pool of producing connections (batched as the purchases are).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use broker::client::{Client, ClientConfig};
use broker::protocol::Record;

use super::log::{LineLog, LogFuture, SEAL_ID, join_id};
use crate::access::BuyerId;
use crate::domain::EventId;
use crate::queue::producer::{Producer, live_client, unavailable};
use crate::queue::{BrokerQueueConfig, QueueError};

/// An event's line topic.
pub fn line_topic(event: EventId) -> String {
    format!("line.{event}")
}

/// The broker as a [`LineLog`].
#[derive(Debug)]
pub struct BrokerLineLog {
    producer: Producer,
    client: ClientConfig,
    /// The connection that creates line topics.
    admin: tokio::sync::Mutex<Option<Client>>,
    /// The events whose topic this process made sure of.
    topics: Mutex<HashSet<EventId>>,
}

#[derive(serde::Serialize)]
struct JoinRecord<'a> {
    visitor: &'a BuyerId,
    at_ms: i64,
}

impl BrokerLineLog {
    /// A log over the broker the purchase queue's `config` reaches (its address, token,
    /// connection count and enqueue timeout), with connections of its own.
    pub fn new(config: &BrokerQueueConfig) -> Self {
        let client = config.client_config(config.enqueue_timeout);
        let (connections, timeout) = (config.connections, config.enqueue_timeout);
        Self {
            producer: Producer::start(client.clone(), connections, timeout),
            client,
            admin: tokio::sync::Mutex::new(None),
            topics: Mutex::new(HashSet::new()),
        }
    }

    /// Creates `event`'s topic unless this process already did (the broker answers a topic
    /// that exists without creating it again).
    async fn ensure_topic(&self, event: EventId) -> Result<Arc<str>, QueueError> {
        let topic: Arc<str> = Arc::from(line_topic(event));
        let known = self
            .topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&event);
        if !known {
            let client = live_client(&self.client, &mut *self.admin.lock().await).await?;
            client.create_topic(&topic, 1).await.map_err(unavailable)?;
            self.topics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(event);
        }
        Ok(topic)
    }

    async fn append(&self, event: EventId, record: Record) -> Result<u64, QueueError> {
        let topic = self.ensure_topic(event).await?;
        Ok(self.producer.produce(topic, record).await?.offset)
    }
}

impl LineLog for BrokerLineLog {
    fn join<'a>(&'a self, event: EventId, visitor: &'a BuyerId, at_ms: i64) -> LogFuture<'a, u64> {
        Box::pin(async move {
            let payload =
                serde_json::to_vec(&JoinRecord { visitor, at_ms }).map_err(unavailable)?;
            let record = Record::new(payload).with_dedup_id(join_id(visitor));
            self.append(event, record).await
        })
    }

    fn seal(&self, event: EventId) -> LogFuture<'_, u64> {
        Box::pin(async move {
            let record = Record::new(b"{\"seal\":true}".to_vec()).with_dedup_id(SEAL_ID);
            self.append(event, record).await
        })
    }
}
