//! The production [`PurchaseQueue`]: ticketrush's broker.
//!
//! - Jobs go to topic `purchases` (key = event id, dedup id = purchase id), so an event's jobs
//!   share a partition in arrival order, and a retried purchase gets its first position back.
//! - Workers are members of the `ordered` group `workers` (one worker per partition at a time,
//!   strict order); each consumer has its own connection, so a dead worker's jobs go back.
//! - Dead letters are in `purchases.dlq`, read by the shared group `workers-dlq`; their original
//!   position and the reason travel in the broker's `x-dlq-*` headers. That group retries a dead
//!   letter until its purchase is marked failed (it never dead-letters one again).
//! - The API produces through a small pool of connections that batches what arrives while a
//!   Produce is out (see `producer`); every enqueue has a deadline, so a slow or dead broker is
//!   a prompt `Unavailable`, never a hang.

use std::sync::Arc;
use std::time::Duration;

use broker::client::{Client, ClientConfig, ClientError, Consumer};
use broker::engine::delivery_id;
use broker::protocol::{FetchMode, Record};
use tokio::sync::Mutex;

use super::contract::{Backlog, Delivery, DeliveryTag, Enqueued, JobConsumer, Lane, PurchaseQueue};
use super::error::QueueError;
use super::producer::{Producer, live_client, unavailable};
use crate::config_error::ConfigError;
use crate::domain::{Position, PurchaseJob, QueuedJob};

/// How to reach the broker and how the purchase topic and groups are set up.
#[derive(Debug, Clone)]
pub struct BrokerQueueConfig {
    /// `host:port` of the broker, or of a cluster's brokers, comma-separated (the client finds
    /// the leader, and follows it when it moves).
    pub addr: String,
    /// The broker's token, if it has one.
    pub token: Option<String>,
    /// The purchases topic.
    pub topic: String,
    /// Its partitions (used when this queue creates it).
    pub partitions: u32,
    /// The workers' group.
    pub group: String,
    /// Connections the API keeps for producing.
    pub connections: usize,
    /// Longest an enqueue may take before the API answers 503.
    pub enqueue_timeout: Duration,
    /// Visibility timeout of a job delivered to a worker.
    pub lease: Duration,
    /// Deliveries of a job before it is dead-lettered (a dead letter is retried until its
    /// purchase is marked failed).
    pub max_attempts: u32,
}

impl BrokerQueueConfig {
    /// Defaults: topic `purchases` with 8 partitions, group `workers`, 4 connections, 2 s per
    /// enqueue, 30 s leases, 5 attempts.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            topic: "purchases".into(),
            partitions: 8,
            group: "workers".into(),
            connections: 4,
            enqueue_timeout: Duration::from_secs(2),
            lease: Duration::from_secs(30),
            max_attempts: 5,
        }
    }

    /// Checks every setting's range, and the topic and group names as the broker would.
    ///
    /// # Errors
    /// The first setting out of its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(
            !self.addr.is_empty(),
            "BrokerQueueConfig::addr",
            "must name the broker",
        )?;
        ConfigError::check(
            self.token.as_deref() != Some(""),
            "BrokerQueueConfig::token",
            "must not be empty (None for no token)",
        )?;
        for (setting, kind, name) in [
            ("BrokerQueueConfig::topic", "topic", &self.topic),
            ("BrokerQueueConfig::group", "group", &self.group),
        ] {
            broker::engine::validate_name(kind, name).map_err(|e| ConfigError {
                setting,
                reason: e.to_string(),
            })?;
        }
        ConfigError::check(
            (1..=broker::config::MAX_PARTITIONS).contains(&self.partitions),
            "BrokerQueueConfig::partitions",
            format!("must be 1 to {}", broker::config::MAX_PARTITIONS),
        )?;
        ConfigError::check(
            self.connections > 0,
            "BrokerQueueConfig::connections",
            "must be at least 1",
        )?;
        let positive = "must be more than zero";
        ConfigError::check(
            !self.enqueue_timeout.is_zero(),
            "BrokerQueueConfig::enqueue_timeout",
            positive,
        )?;
        ConfigError::check(!self.lease.is_zero(), "BrokerQueueConfig::lease", positive)?;
        ConfigError::check(
            self.max_attempts > 0,
            "BrokerQueueConfig::max_attempts",
            "must be at least 1",
        )
    }

    fn dlq_topic(&self) -> String {
        format!("{}{}", self.topic, broker::engine::DLQ_SUFFIX)
    }

    /// A broker client's settings for these: address, token, and a request deadline of the
    /// enqueue timeout (at least 5 s), connecting within `connect_timeout`.
    pub fn client_config(&self, connect_timeout: Duration) -> ClientConfig {
        let mut c = ClientConfig::new(self.addr.clone()).with_token(self.token.clone());
        c.client_id = format!("ticket-svc/{}", env!("CARGO_PKG_VERSION"));
        c.connect_timeout = connect_timeout;
        c.request_timeout = self.enqueue_timeout.max(Duration::from_secs(5));
        c
    }
}

/// The pause between tries of [`BrokerQueue::connect`] while the broker says to retry.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The broker as a [`PurchaseQueue`].
#[derive(Debug)]
pub struct BrokerQueue {
    config: BrokerQueueConfig,
    /// The producing connections.
    producer: Producer,
    /// The purchases topic, as the producer takes it.
    topic: Arc<str>,
    /// The connection readiness probes use (and the one `connect` made the topic with).
    probe: Mutex<Option<Client>>,
}

impl BrokerQueue {
    /// Connects and makes sure the topic exists, trying again for up to `connect_timeout`
    /// while the broker is unreachable or says to retry (a cluster still electing its leader).
    pub async fn connect(
        config: BrokerQueueConfig,
        connect_timeout: Duration,
    ) -> Result<Self, QueueError> {
        config.validate()?;
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let first = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = async {
                let client = Client::connect(config.client_config(left)).await?;
                client
                    .create_topic(&config.topic, config.partitions)
                    .await?;
                Ok::<_, ClientError>(client)
            };
            match attempt.await {
                Ok(client) => break client,
                Err(e) if e.is_retriable() && left > CONNECT_RETRY_PAUSE => {
                    tracing::debug!(error = %e, "broker not ready; trying again");
                    tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
                }
                Err(e) => return Err(unavailable(e)),
            }
        };
        let producer = Producer::start(
            config.client_config(config.enqueue_timeout),
            config.connections,
            config.enqueue_timeout,
        );
        Ok(Self {
            topic: Arc::from(config.topic.as_str()),
            config,
            producer,
            probe: Mutex::new(Some(first)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerQueueConfig {
        &self.config
    }

    /// The probe connection, replacing a broken one (with a short connect deadline).
    async fn probe_client(&self) -> Result<Client, QueueError> {
        let mut slot = self.probe.lock().await;
        live_client(
            &self.config.client_config(self.config.enqueue_timeout),
            &mut slot,
        )
        .await
    }
}

impl PurchaseQueue for BrokerQueue {
    type Consumer = BrokerConsumer;

    async fn enqueue(&self, job: &PurchaseJob) -> Result<Enqueued, QueueError> {
        let payload = serde_json::to_vec(job).map_err(unavailable)?;
        let record = Record::new(payload)
            .with_key(job.event_id.to_string())
            .with_dedup_id(job.purchase_id.0.to_string());
        let ack = self
            .producer
            .produce(Arc::clone(&self.topic), record)
            .await?;
        Ok(Enqueued {
            position: Position(ack.offset),
            is_duplicate: ack.duplicate,
        })
    }

    async fn consumer(&self, lane: Lane, name: &str) -> Result<BrokerConsumer, QueueError> {
        let mut cfg = self.config.client_config(self.config.enqueue_timeout);
        cfg.client_id = format!("ticket-svc-worker/{name}");
        let client = Client::connect(cfg).await.map_err(unavailable)?;
        let consumer = match lane {
            Lane::Purchases => Consumer::new(
                client,
                &self.config.topic,
                &self.config.group,
                FetchMode::Ordered,
            )
            .max_attempts(self.config.max_attempts),
            Lane::DeadLetters => {
                let dlq = self.config.dlq_topic();
                client.create_topic(&dlq, 1).await.map_err(unavailable)?;
                // A dead letter is retried until its purchase is marked failed: dead-lettered
                // once more, it would land in a topic nobody reads and its purchase would stay
                // pending for good. (The group keeps the setting it was created with.)
                Consumer::new(
                    client,
                    &dlq,
                    &format!("{}-dlq", self.config.group),
                    FetchMode::Shared,
                )
                .max_attempts(u32::MAX)
            }
        }
        .lease(self.config.lease);
        Ok(BrokerConsumer {
            consumer,
            lane,
            dlq_topic: self.config.dlq_topic(),
        })
    }

    async fn check_ready(&self) -> Result<(), QueueError> {
        let probe = async {
            let c = self.probe_client().await?;
            c.stats(&self.config.topic).await.map_err(unavailable)?;
            Ok::<(), QueueError>(())
        };
        tokio::time::timeout(Duration::from_secs(1), probe)
            .await
            .map_err(|_| unavailable("broker did not answer within 1s"))?
    }

    async fn backlog(&self) -> Option<Backlog> {
        let read = async {
            let c = self.probe_client().await.ok()?;
            let stats = c.stats(&self.config.topic).await.ok()?;
            backlog_of(&stats, &self.config.topic, &self.config.group)
        };
        tokio::time::timeout(Duration::from_secs(1), read)
            .await
            .ok()
            .flatten()
    }
}

/// The backlog of `group` on `topic` in the broker's stats document (`broker stats`), or `None`
/// when the document has no such topic or group (a group exists from its first fetch on).
pub fn backlog_of(stats: &serde_json::Value, topic: &str, group: &str) -> Option<Backlog> {
    let g = stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == topic)?["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)?;
    let partitions = g["partitions"].as_array()?;
    Some(Backlog {
        queued: g["lag"].as_u64()?,
        busy_partitions: partitions
            .iter()
            .filter(|p| p["lag"].as_u64().is_some_and(|l| l > 0))
            .count(),
        decided: partitions
            .iter()
            .map(|p| p["committed"].as_u64().unwrap_or(0))
            .sum(),
    })
}

/// A worker's membership in the purchases group (or the dead-letter group).
#[derive(Debug)]
pub struct BrokerConsumer {
    consumer: Consumer,
    lane: Lane,
    dlq_topic: String,
}

fn header_str<'a>(d: &'a broker::protocol::Delivery, name: &str) -> Option<&'a str> {
    d.record
        .header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl BrokerConsumer {
    /// A payload that is not a job: park it in the dead-letter topic with the reason, then ack
    /// it so it never blocks its partition.
    async fn park(&self, d: &broker::protocol::Delivery, why: &str) -> Result<(), ClientError> {
        tracing::error!(
            partition = d.partition,
            offset = d.offset,
            reason = why,
            "undecodable job; dead-lettering it"
        );
        if self.lane == Lane::Purchases {
            let mut record = d.record.clone();
            record.dedup_id = Some(format!("undecodable:{}:{}", d.partition, d.offset));
            record = record
                .with_header("x-dlq-reason", format!("undecodable payload: {why}"))
                .with_header("x-dlq-offset", d.offset.to_string())
                .with_header("x-dlq-partition", d.partition.to_string());
            self.consumer
                .client()
                .produce(&self.dlq_topic, record)
                .await?;
        }
        self.consumer.ack(&[d.delivery_id]).await.map(|_| ())
    }
}

impl JobConsumer for BrokerConsumer {
    async fn fetch(
        &mut self,
        max_jobs: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let c = self
            .consumer
            .clone()
            .max_records(u32::try_from(max_jobs.max(1)).unwrap_or(u32::MAX))
            .wait(wait);
        let got = c.fetch().await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(got.len());
        for d in got {
            let job: PurchaseJob = match serde_json::from_slice(&d.record.payload) {
                Ok(j) => j,
                Err(e) => {
                    self.park(&d, &e.to_string()).await.map_err(unavailable)?;
                    continue;
                }
            };
            let (position, reason) = match self.lane {
                Lane::Purchases => (d.offset, None),
                Lane::DeadLetters => (
                    header_str(&d, "x-dlq-offset")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(d.offset),
                    Some(
                        header_str(&d, "x-dlq-reason")
                            .unwrap_or("unknown")
                            .to_string(),
                    ),
                ),
            };
            out.push(Delivery {
                tag: DeliveryTag {
                    partition: d.partition,
                    offset: d.offset,
                },
                job: QueuedJob {
                    job,
                    position: Position(position),
                },
                attempt: d.attempt,
                dead_letter_reason: reason,
            });
        }
        Ok(out)
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), QueueError> {
        let ids: Vec<u64> = tags
            .iter()
            .map(|t| delivery_id(t.partition, t.offset))
            .collect();
        self.consumer
            .ack(&ids)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn nack(&mut self, tags: &[DeliveryTag], delay: Duration) -> Result<(), QueueError> {
        let ids: Vec<u64> = tags
            .iter()
            .map(|t| delivery_id(t.partition, t.offset))
            .collect();
        self.consumer
            .nack(&ids, delay, "worker could not decide the job")
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate_and_each_range_is_checked() {
        crate::testing::assert_each_refused(
            &BrokerQueueConfig::new("127.0.0.1:7070"),
            BrokerQueueConfig::validate,
            &[
                ("BrokerQueueConfig::addr", |c| c.addr.clear()),
                ("BrokerQueueConfig::token", |c| {
                    c.token = Some(String::new())
                }),
                ("BrokerQueueConfig::topic", |c| c.topic = "no spaces".into()),
                ("BrokerQueueConfig::group", |c| c.group.clear()),
                ("BrokerQueueConfig::partitions", |c| c.partitions = 0),
                ("BrokerQueueConfig::partitions", |c| {
                    c.partitions = 1_000_000
                }),
                ("BrokerQueueConfig::connections", |c| c.connections = 0),
                ("BrokerQueueConfig::enqueue_timeout", |c| {
                    c.enqueue_timeout = Duration::ZERO;
                }),
                ("BrokerQueueConfig::lease", |c| c.lease = Duration::ZERO),
                ("BrokerQueueConfig::max_attempts", |c| c.max_attempts = 0),
            ],
        );
    }

    #[tokio::test]
    async fn connect_refuses_a_bad_config_before_it_dials() {
        let mut config = BrokerQueueConfig::new("127.0.0.1:1");
        config.partitions = 0;
        let Err(e) = BrokerQueue::connect(config, Duration::from_secs(30)).await else {
            panic!("a queue with no partitions connected");
        };
        assert!(matches!(e, QueueError::Config(_)), "{e}");
    }
}
