//! The production [`PurchaseQueue`]: ticketrush's broker.
//!
//! - Jobs go to topic `purchases` (key = event id, dedup id = purchase id), so an event's jobs
//!   share a partition in arrival order, and a retried purchase gets its first position back.
//! - Workers are members of the `ordered` group `workers` (one worker per partition at a time,
//!   strict order); each consumer has its own connection, so a dead worker's jobs go back.
//! - Dead letters are in `purchases.dlq`, read by the shared group `workers-dlq`; their original
//!   position and the reason travel in the broker's `x-dlq-*` headers. That group retries a dead
//!   letter until its purchase is marked failed (it never dead-letters one again).
//! - The API keeps a small pool of connections, each with a producer task, all fed from one
//!   queue. Normally one Produce is in flight per API: the jobs that arrive while it is out wait
//!   for its answer and then go out together in the next one (natural batching, no linger: an
//!   idle API sends a lone job at once). A Produce is answered after the broker's next fsync, and
//!   every Produce that reaches a partition during one fsync shares the next, so sending more at
//!   once buys no latency; it only multiplies the frames, hand-offs and answers per job. Another
//!   connection sends at once only when a full batch is waiting or the jobs have waited
//!   [`STALLED_PRODUCE`] for the Produce in flight (a stuck connection does not hold the line).
//!   A broken connection is replaced on next use; every enqueue has a deadline, so a slow or
//!   dead broker is a prompt `Unavailable`, never a hang.

use std::sync::Arc;
use std::time::Duration;

use broker::client::{Client, ClientConfig, ClientError, Consumer};
use broker::engine::delivery_id;
use broker::protocol::{FetchMode, ProduceAck, Record};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::contract::{Delivery, DeliveryTag, Enqueued, JobConsumer, Lane, PurchaseQueue};
use super::error::QueueError;
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

    fn client_config(&self, connect_timeout: Duration) -> ClientConfig {
        let mut c = ClientConfig::new(self.addr.clone()).with_token(self.token.clone());
        c.client_id = format!("ticket-svc/{}", env!("CARGO_PKG_VERSION"));
        c.connect_timeout = connect_timeout;
        c.request_timeout = self.enqueue_timeout.max(Duration::from_secs(5));
        c
    }
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable {
        reason: e.to_string(),
    }
}

/// How long a producer waits before sending jobs again after a retriable failure.
const RESEND_BACKOFF: Duration = Duration::from_millis(50);
/// The most jobs one Produce carries.
const MAX_PRODUCE_BATCH: usize = 256;
/// How long jobs wait for the Produce in flight before another connection sends them anyway.
/// A Produce normally takes one or two fsyncs (about a millisecond on a local SSD); past this
/// its connection is probably stuck, and the jobs behind it should not share its fate.
pub const STALLED_PRODUCE: Duration = Duration::from_millis(10);
/// The pause between tries of [`BrokerQueue::connect`] while the broker says to retry.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Jobs waiting for a free connection before enqueuers wait (their deadline still holds).
const BATCH_QUEUE: usize = 4_096;

/// One job waiting for the next free connection's Produce.
struct PendingJob {
    record: Record,
    reply: oneshot::Sender<Result<ProduceAck, QueueError>>,
}

/// The broker as a [`PurchaseQueue`].
#[derive(Debug)]
pub struct BrokerQueue {
    config: BrokerQueueConfig,
    /// The jobs waiting for a producer (one per pooled connection).
    jobs: mpsc::Sender<PendingJob>,
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
        let (jobs, waiting) = mpsc::channel(BATCH_QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        let (in_flight, _) = watch::channel(0usize);
        let in_flight = Arc::new(in_flight);
        for _ in 0..config.connections.max(1) {
            tokio::spawn(run_producer(
                config.clone(),
                Arc::clone(&waiting),
                Arc::clone(&in_flight),
            ));
        }
        Ok(Self {
            config,
            jobs,
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
        live_client(&self.config, &mut slot).await
    }
}

/// `slot`'s connection if it is alive, else a new one (connect deadline: the enqueue timeout).
async fn live_client(
    config: &BrokerQueueConfig,
    slot: &mut Option<Client>,
) -> Result<Client, QueueError> {
    if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
        return Ok(c.clone());
    }
    *slot = None;
    let c = Client::connect(config.client_config(config.enqueue_timeout))
        .await
        .map_err(unavailable)?;
    *slot = Some(c.clone());
    Ok(c)
}

/// Takes the next batch from the shared queue: at least one job, and then, while another
/// Produce is in flight, whatever else arrives until it is answered, the batch is full, or it
/// has taken [`STALLED_PRODUCE`]. Returns false when the queue is closed and empty.
async fn take_batch(
    queue: &mut mpsc::Receiver<PendingJob>,
    in_flight: &watch::Sender<usize>,
    batch: &mut Vec<PendingJob>,
) -> bool {
    if queue.recv_many(batch, MAX_PRODUCE_BATCH).await == 0 {
        return false;
    }
    let mut others = in_flight.subscribe();
    if batch.len() >= MAX_PRODUCE_BATCH || *others.borrow_and_update() == 0 {
        return true;
    }
    let stalled = tokio::time::sleep(STALLED_PRODUCE);
    tokio::pin!(stalled);
    while batch.len() < MAX_PRODUCE_BATCH && *others.borrow_and_update() > 0 {
        tokio::select! {
            biased;
            changed = others.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            more = queue.recv_many(batch, MAX_PRODUCE_BATCH - batch.len()) => {
                if more == 0 {
                    break;
                }
            }
            () = &mut stalled => break,
        }
    }
    true
}

/// Counts a Produce in flight for as long as it lives; waiters hear only when none is left.
struct InFlight<'a>(&'a watch::Sender<usize>);

impl<'a> InFlight<'a> {
    fn start(count: &'a watch::Sender<usize>) -> Self {
        count.send_if_modified(|n| {
            *n += 1;
            false
        });
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_if_modified(|n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// Feeds one producing connection: waits its turn at the shared queue, takes a batch (see
/// [`take_batch`]), lets the next producer take the queue, sends the jobs in one Produce,
/// answers each with its own ack, repeats. Ends when the queue is dropped.
async fn run_producer(
    config: BrokerQueueConfig,
    queue: Arc<Mutex<mpsc::Receiver<PendingJob>>>,
    in_flight: Arc<watch::Sender<usize>>,
) {
    let mut slot = None;
    let mut waiting = Vec::with_capacity(MAX_PRODUCE_BATCH);
    loop {
        // Held only while taking jobs: the other producers take the queue while this one's
        // Produce is in flight.
        if !take_batch(&mut *queue.lock().await, &in_flight, &mut waiting).await {
            return;
        }
        // A job whose caller already gave up (deadline passed, answered 503) is not sent: the
        // buyer was told it was not queued.
        let mut jobs: Vec<PendingJob> =
            waiting.drain(..).filter(|p| !p.reply.is_closed()).collect();
        while !jobs.is_empty() {
            let records: Vec<Record> = jobs.iter().map(|p| p.record.clone()).collect();
            let producing = InFlight::start(&in_flight);
            let sent = match live_client(&config, &mut slot).await {
                Ok(client) => client
                    .produce_batch(&config.topic, records)
                    .await
                    .map_err(|e| (e.is_retriable(), unavailable(e))),
                Err(e) => Err((true, e)),
            };
            drop(producing);
            match sent {
                Ok(acks) => {
                    for (job, ack) in jobs.drain(..).zip(acks) {
                        let _ = job.reply.send(Ok(ack));
                    }
                }
                // The broker restarted, or a cluster's leadership moved: send the jobs again,
                // for as long as their callers wait. Their dedup ids (the purchase ids) make a
                // job that was appended before the failure answer with its first offset, not
                // be appended twice.
                Err((true, e)) => {
                    slot = None;
                    tracing::debug!(error = %e, jobs = jobs.len(), "produce failed; sending again");
                    tokio::time::sleep(RESEND_BACKOFF).await;
                    jobs.retain(|p| !p.reply.is_closed());
                }
                Err((false, e)) => {
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

impl PurchaseQueue for BrokerQueue {
    type Consumer = BrokerConsumer;

    async fn enqueue(&self, job: &PurchaseJob) -> Result<Enqueued, QueueError> {
        let payload = serde_json::to_vec(job).map_err(unavailable)?;
        let record = Record::new(payload)
            .with_key(job.event_id.to_string())
            .with_dedup_id(job.purchase_id.0.to_string());
        let deadline = self.config.enqueue_timeout;
        let attempt = async {
            let (reply, ack) = oneshot::channel();
            let gone = || unavailable("the API's broker producers stopped");
            self.jobs
                .send(PendingJob { record, reply })
                .await
                .map_err(|_| gone())?;
            ack.await.map_err(|_| gone())?
        };
        let ack = tokio::time::timeout(deadline, attempt)
            .await
            .map_err(|_| {
                unavailable(format!("broker did not acknowledge within {deadline:?}"))
            })??;
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

    fn job(
        n: u8,
    ) -> (
        PendingJob,
        oneshot::Receiver<Result<ProduceAck, QueueError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let record = Record::new(vec![n]);
        (PendingJob { record, reply }, rx)
    }

    fn payloads(batch: &[PendingJob]) -> Vec<u8> {
        batch.iter().map(|p| p.record.payload[0]).collect()
    }

    #[tokio::test]
    async fn an_idle_api_sends_a_lone_job_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        let (in_flight, _) = watch::channel(0usize);
        let (j, _r) = job(1);
        tx.send(j).await.unwrap();
        let mut batch = Vec::new();
        assert!(take_batch(&mut rx, &in_flight, &mut batch).await);
        assert_eq!(payloads(&batch), vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_wait_for_the_produce_in_flight_and_then_go_out_together() {
        let (tx, mut rx) = mpsc::channel(16);
        let (in_flight, _) = watch::channel(0usize);
        let producing = InFlight::start(&in_flight);
        let mut replies = Vec::new();
        for n in 1..=3 {
            let (j, r) = job(n);
            tx.send(j).await.unwrap();
            replies.push(r);
        }
        let mut batch = Vec::new();
        {
            let take = take_batch(&mut rx, &in_flight, &mut batch);
            tokio::pin!(take);
            // Held back while the other Produce is out, taking what arrives meanwhile.
            let held = tokio::time::timeout(Duration::from_millis(1), &mut take).await;
            assert!(held.is_err());
            let (j, r) = job(4);
            tx.send(j).await.unwrap();
            replies.push(r);
            let held = tokio::time::timeout(Duration::from_millis(1), &mut take).await;
            assert!(held.is_err());
            drop(producing);
            assert!(take.await);
        }
        assert_eq!(payloads(&batch), vec![1, 2, 3, 4]);
        assert_eq!(*in_flight.borrow(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_produce_does_not_hold_the_line() {
        let (tx, mut rx) = mpsc::channel(16);
        let (in_flight, _) = watch::channel(0usize);
        let _stuck = InFlight::start(&in_flight);
        let (j, _r) = job(7);
        tx.send(j).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        assert!(take_batch(&mut rx, &in_flight, &mut batch).await);
        assert_eq!(payloads(&batch), vec![7]);
        assert_eq!(started.elapsed(), STALLED_PRODUCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_even_with_a_produce_in_flight() {
        let (tx, mut rx) = mpsc::channel(MAX_PRODUCE_BATCH + 1);
        let (in_flight, _) = watch::channel(0usize);
        let _producing = InFlight::start(&in_flight);
        let mut replies = Vec::new();
        for n in 0..=MAX_PRODUCE_BATCH {
            let (j, r) = job(u8::try_from(n % 256).unwrap());
            tx.send(j).await.unwrap();
            replies.push(r);
        }
        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        assert!(take_batch(&mut rx, &in_flight, &mut batch).await);
        assert_eq!(batch.len(), MAX_PRODUCE_BATCH);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_closed_empty_queue_ends_the_producer() {
        let (tx, mut rx) = mpsc::channel::<PendingJob>(1);
        drop(tx);
        let (in_flight, _) = watch::channel(0usize);
        let mut batch = Vec::new();
        assert!(!take_batch(&mut rx, &in_flight, &mut batch).await);
    }
}
