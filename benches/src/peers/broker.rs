//! Our broker behind the workload traits: one client connection per producer and per consumer,
//! a produce counts when its Produce response arrived (under `--fsync always` that is after
//! `fdatasync`), consumers are members of one `shared` group and ack each batch they fetched.

use std::time::Duration;

use broker::client::{Client, ClientConfig, Consumer};
use broker::protocol::{FetchMode, Record};
use bytes::Bytes;

use super::{GROUP, System};
use crate::workload::{Producer, Receiver};

/// Connects one client, with a connect timeout generous enough for a loaded machine.
pub async fn connect(addr: &str) -> anyhow::Result<Client> {
    let mut cfg = ClientConfig::new(addr);
    cfg.connect_timeout = Duration::from_secs(10);
    Ok(Client::connect(cfg).await?)
}

/// A running broker at `addr`; topics get `partitions` partitions, members fetch up to
/// `max_records` at a time.
#[derive(Debug, Clone)]
pub struct Broker {
    /// `HOST:PORT` of the broker.
    pub addr: String,
    /// Partitions of each topic created.
    pub partitions: u32,
    /// Most records per fetch.
    pub max_records: u32,
}

impl System for Broker {
    type Producer = BrokerProducer;
    type Receiver = BrokerReceiver;

    /// Creates the topic and its consumer group. The peers' `create` make their group too
    /// (Redis `XGROUP CREATE`, a JetStream consumer, a RabbitMQ queue); ours is made by a first
    /// fetch, which otherwise fell inside the timed phase: its durable setup (files, fsyncs) was
    /// measured as the first records' delivery latency.
    async fn create(&self, name: &str) -> anyhow::Result<()> {
        let client = connect(&self.addr).await?;
        client.create_topic(name, self.partitions).await?;
        let joined = Consumer::new(client, name, GROUP, FetchMode::Shared)
            .wait(Duration::ZERO)
            .fetch()
            .await?;
        anyhow::ensure!(
            joined.is_empty(),
            "a new topic {name} already holds records"
        );
        Ok(())
    }

    async fn producer(&self, name: &str, index: usize) -> anyhow::Result<BrokerProducer> {
        BrokerProducer::connect(&self.addr, name, Some(index)).await
    }

    async fn receiver(&self, name: &str, _index: usize) -> anyhow::Result<BrokerReceiver> {
        BrokerReceiver::connect(&self.addr, name, GROUP, self.max_records).await
    }

    /// The protocol has no topic deletion: the topic stays until the data dir is removed.
    async fn delete(&self, _name: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A producing connection to a topic.
#[derive(Debug)]
pub struct BrokerProducer {
    client: Client,
    topic: String,
    /// Some(p): each record gets the key `k{p}-{i}`, spreading records over the partitions.
    key_prefix: Option<usize>,
}

impl BrokerProducer {
    /// Connects a producer to `topic` on `addr`; with `key_prefix` its records carry keys.
    pub async fn connect(
        addr: &str,
        topic: &str,
        key_prefix: Option<usize>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: connect(addr).await?,
            topic: topic.to_string(),
            key_prefix,
        })
    }
}

impl Producer for BrokerProducer {
    async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        let records = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Record {
                payload,
                key: self.key_prefix.map(|p| Bytes::from(format!("k{p}-{i}"))),
                ..Record::default()
            })
            .collect();
        self.client.produce_batch(&self.topic, records).await?;
        Ok(())
    }
}

/// A member of a `shared` consumer group.
#[derive(Debug)]
pub struct BrokerReceiver {
    consumer: Consumer,
    unacked: Vec<u64>,
}

impl BrokerReceiver {
    /// Connects a member of `group` on `topic`, fetching up to `max_records` at a time.
    pub async fn connect(
        addr: &str,
        topic: &str,
        group: &str,
        max_records: u32,
    ) -> anyhow::Result<Self> {
        let consumer = Consumer::new(connect(addr).await?, topic, group, FetchMode::Shared)
            .max_records(max_records)
            .wait(Duration::from_millis(100));
        Ok(Self {
            consumer,
            unacked: Vec::new(),
        })
    }
}

impl Receiver for BrokerReceiver {
    async fn fetch(&mut self) -> anyhow::Result<Vec<Bytes>> {
        let got = self.consumer.fetch().await?;
        self.unacked = got.iter().map(|d| d.delivery_id).collect();
        Ok(got.into_iter().map(|d| d.record.payload).collect())
    }

    async fn ack(&mut self) -> anyhow::Result<()> {
        if !self.unacked.is_empty() {
            self.consumer.ack(&self.unacked).await?;
            self.unacked.clear();
        }
        Ok(())
    }
}
