//! The broker's core: topics, partitions and groups, and the operations the server exposes.
//!
//! The server decodes requests and calls these methods; they return typed results or an
//! [`EngineError`], which the server maps to a wire error code in one place.

pub mod group;
pub mod partition;
pub mod thread;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::metrics::{self, Metrics};
use crate::protocol::{
    AckStatus, Delivery, FetchMode, FetchRequest, Header, NackStatus, ProduceAck, Record,
};
use crate::queue::journal::write_atomic;
use crate::queue::{AckOutcome, ConsumerId, DeadLetter, GroupConfig, NackOutcome};
use crate::storage::{LogConfig, StorageError};
use group::Group;
use partition::Partition;

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Most records one fetch returns.
pub const MAX_FETCH_RECORDS: usize = 10_000;
/// Longest a fetch may wait.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);
/// Suffix of a topic's dead-letter topic.
pub const DLQ_SUFFIX: &str = ".dlq";
/// Bytes a fetch response aims to stay under, leaving room below the frame limit.
const FETCH_MAX_BYTES: usize = 4 * 1024 * 1024;
/// How often a waiting fetch re-checks for retries whose delay has passed.
const FETCH_RECHECK: Duration = Duration::from_millis(20);

/// Why an operation failed; the server maps each to a wire error code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// No such group.
    #[error("unknown group {group:?} on topic {topic:?}: a group is created by its first fetch")]
    UnknownGroup {
        /// Topic.
        topic: String,
        /// Group.
        group: String,
    },
    /// The request made no sense.
    #[error("{0}")]
    Invalid(String),
    /// The group exists with another mode.
    #[error("group {group:?} is {existing}, not {requested}")]
    GroupMismatch {
        /// Group.
        group: String,
        /// Its mode.
        existing: &'static str,
        /// The mode asked for.
        requested: &'static str,
    },
    /// Disk trouble.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The broker is stopping.
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// A topic's settings, stored in `topic.json`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicConfig {
    /// Partition count.
    pub partitions: u32,
    /// Retention by size per partition (0 = the broker default).
    pub retention_bytes: u64,
    /// Retention by age (0 = the broker default).
    pub retention_ms: u64,
}

/// A topic: its partitions and groups.
#[derive(Debug)]
pub struct Topic {
    name: String,
    config: TopicConfig,
    partitions: Vec<Partition>,
    notify: Arc<Notify>,
    round_robin: AtomicU32,
    groups: std::sync::Mutex<HashMap<String, Arc<Group>>>,
    group_create: tokio::sync::Mutex<()>,
}

impl Topic {
    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Settings.
    pub fn config(&self) -> TopicConfig {
        self.config
    }

    fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn groups(&self) -> Vec<Arc<Group>> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn readable_ends(&self) -> Vec<u64> {
        self.partitions
            .iter()
            .map(Partition::readable_end)
            .collect()
    }

    /// The partition of a record: FNV-1a (32-bit) of the key modulo the partition count; for
    /// a record without a key, of its dedup id; else round robin.
    fn partition_for(&self, record: &Record) -> u32 {
        let n = self.config.partitions.max(1);
        let hashed = record
            .key
            .as_deref()
            .or(record.dedup_id.as_deref().map(str::as_bytes));
        match hashed {
            Some(k) => fnv1a32(k) % n,
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// FNV-1a, 32 bits: the documented, stable partitioning hash.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Checks a topic or group name: 1 to 249 bytes of `A-Z a-z 0-9 . _ -`, not `.` or `..`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "bad {kind} name {name:?}: use 1-249 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// The broker's state.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    metrics: Arc<Metrics>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    topic_create: tokio::sync::Mutex<()>,
    clock: Instant,
    reported: std::sync::Mutex<HashMap<(String, String), (u64, u64)>>,
}

fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

fn groups_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join("groups").join(topic)
}

impl Broker {
    /// Opens every topic and group under the data directory, recovering their logs. Blocking:
    /// call it before serving (or from `spawn_blocking`).
    pub fn open(config: BrokerConfig, metrics: Arc<Metrics>) -> Result<Self, EngineError> {
        let dir = topics_dir(&config.data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create", &dir, e))?;
        let probe = config.data_dir.join(".write-probe");
        std::fs::write(&probe, b"ok")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| StorageError::io("write to", &config.data_dir, e))?;
        let broker = Self {
            config,
            metrics,
            topics: RwLock::new(HashMap::new()),
            topic_create: tokio::sync::Mutex::new(()),
            clock: Instant::now(),
            reported: std::sync::Mutex::new(HashMap::new()),
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| StorageError::io("list", &dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
            if let Some(name) = entry.file_name().to_str()
                && entry.path().join("topic.json").exists()
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        for name in names {
            let raw = std::fs::read(dir.join(&name).join("topic.json"))
                .map_err(|e| StorageError::io("read", dir.join(&name).join("topic.json"), e))?;
            let config: TopicConfig =
                serde_json::from_slice(&raw).map_err(|e| StorageError::Corrupt {
                    offset: 0,
                    path: dir.join(&name).join("topic.json"),
                    reason: e.to_string(),
                })?;
            let topic = broker.open_topic(&name, config)?;
            broker.open_groups(&topic)?;
            broker
                .topics
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name, topic);
        }
        Ok(broker)
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn open_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>, EngineError> {
        let dir = topics_dir(&self.config.data_dir).join(name);
        let notify = Arc::new(Notify::new());
        let log_config = LogConfig {
            segment_bytes: self.config.segment_bytes,
            max_record_bytes: self.config.max_frame_bytes + 1024,
        };
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let (part, report) = Partition::open(
                name,
                p,
                &dir.join(p.to_string()),
                log_config,
                self.config.fsync,
                self.config.dedup_window,
                Arc::clone(&notify),
                Arc::clone(&self.metrics),
            )?;
            if report.truncated_bytes > 0 {
                tracing::warn!(
                    topic = name,
                    partition = p,
                    bytes = report.truncated_bytes,
                    reason = report.reason.unwrap_or("unknown"),
                    "recovery cut a torn or corrupt tail"
                );
                let labels = metrics::partition_labels(name, p);
                self.metrics
                    .recovery_truncated_bytes
                    .get_or_create(&labels)
                    .inc_by(report.truncated_bytes);
                self.metrics
                    .recovery_truncations
                    .get_or_create(&labels)
                    .inc();
            }
            if report.rebuilt_indexes > 0 {
                tracing::info!(
                    topic = name,
                    partition = p,
                    count = report.rebuilt_indexes,
                    "rebuilt segment indexes"
                );
            }
            partitions.push(part);
        }
        Ok(Arc::new(Topic {
            name: name.to_string(),
            config,
            partitions,
            notify,
            round_robin: AtomicU32::new(0),
            groups: std::sync::Mutex::new(HashMap::new()),
            group_create: tokio::sync::Mutex::new(()),
        }))
    }

    fn open_groups(&self, topic: &Arc<Topic>) -> Result<(), EngineError> {
        let dir = groups_dir(&self.config.data_dir, &topic.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(config) = crate::queue::journal::read_config(&entry.path())? else {
                continue;
            };
            let group = self.open_group(topic, &name, config)?;
            topic
                .groups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name, group);
        }
        Ok(())
    }

    fn open_group(
        &self,
        topic: &Topic,
        name: &str,
        config: GroupConfig,
    ) -> Result<Arc<Group>, EngineError> {
        let dir = groups_dir(&self.config.data_dir, &topic.name).join(name);
        let (group, cut) = Group::open(
            &dir,
            name,
            config,
            topic.partitions.len(),
            self.config.fsync,
        )?;
        if cut > 0 {
            tracing::warn!(topic = %topic.name, group = name, bytes = cut, "recovery cut a torn group journal tail");
            let labels = metrics::group_labels(&topic.name, name);
            self.metrics
                .recovery_truncated_bytes
                .get_or_create(&labels)
                .inc_by(cut);
            self.metrics
                .recovery_truncations
                .get_or_create(&labels)
                .inc();
        }
        {
            let mut st = group.state();
            for p in &topic.partitions {
                st.advance_start(p.id(), p.start_offset());
            }
        }
        Ok(Arc::new(group))
    }

    /// The topic called `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn topic_or_auto(&self, name: &str) -> Result<Arc<Topic>, EngineError> {
        self.topic(name)
            .ok_or_else(|| EngineError::UnknownTopic(name.to_string()))
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates a topic; returns whether it was created (false: it existed) and its partition
    /// count.
    pub async fn create_topic(
        self: &Arc<Self>,
        name: &str,
        partitions: u32,
        retention_bytes: u64,
        retention_ms: u64,
    ) -> Result<(bool, u32), EngineError> {
        validate_name("topic", name)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(EngineError::Invalid(format!(
                "partitions must be 1 to {MAX_PARTITIONS}, not {partitions}"
            )));
        }
        let _guard = self.topic_create.lock().await;
        if let Some(t) = self.topic(name) {
            return Ok((false, t.config.partitions));
        }
        let config = TopicConfig {
            partitions,
            retention_bytes,
            retention_ms,
        };
        let this = Arc::clone(self);
        let name_owned = name.to_string();
        let topic = tokio::task::spawn_blocking(move || -> Result<Arc<Topic>, EngineError> {
            let dir = topics_dir(&this.config.data_dir).join(&name_owned);
            std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create", &dir, e))?;
            let topic = this.open_topic(&name_owned, config)?;
            let raw = serde_json::to_vec_pretty(&config).unwrap_or_default();
            write_atomic(&dir.join("topic.json"), &raw)?;
            Ok(topic)
        })
        .await
        .map_err(|_| EngineError::ShuttingDown)??;
        tracing::info!(topic = name, partitions, "created topic");
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), topic);
        Ok((true, partitions))
    }

    async fn ensure_topic(
        self: &Arc<Self>,
        name: &str,
        partitions: u32,
    ) -> Result<Arc<Topic>, EngineError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        self.create_topic(name, partitions, 0, 0).await?;
        self.topic_or_auto(name)
    }

    /// Hands `records` to their partitions' writers now, in order; the returned future
    /// resolves when every one is durable (per the fsync policy), with acks in request order.
    /// Splitting the two keeps pipelined produces from one connection in order.
    pub fn produce(
        self: &Arc<Self>,
        topic_name: &str,
        records: Vec<Record>,
    ) -> impl std::future::Future<Output = Result<Vec<ProduceAck>, EngineError>> + Send + 'static
    {
        let this = Arc::clone(self);
        let topic_name = topic_name.to_string();
        let auto = self.config.auto_create_partitions;
        // Stage now (hand records to the writers in call order); only an implicit topic
        // creation has to wait for the future.
        let staged = match self.topic(&topic_name) {
            Some(t) => Ok(Self::stage(&t, records)),
            None => Err(records),
        };
        async move {
            let staged = match staged {
                Ok(s) => s,
                Err(records) if auto > 0 => {
                    let t = this.ensure_topic(&topic_name, auto).await?;
                    Self::stage(&t, records)
                }
                Err(_) => return Err(EngineError::UnknownTopic(topic_name)),
            };
            let (topic, slots, waits) = staged;
            let mut acks = vec![
                ProduceAck {
                    partition: 0,
                    offset: 0,
                    duplicate: false
                };
                slots.len()
            ];
            for (partition, indexes, rx) in waits {
                let answer = rx.await.map_err(|_| EngineError::ShuttingDown)??;
                for (i, (offset, duplicate)) in indexes.into_iter().zip(answer) {
                    if let Some(a) = acks.get_mut(i) {
                        *a = ProduceAck {
                            partition,
                            offset,
                            duplicate,
                        };
                    }
                }
            }
            drop(topic);
            Ok(acks)
        }
    }

    #[allow(clippy::type_complexity)]
    fn stage(
        topic: &Arc<Topic>,
        records: Vec<Record>,
    ) -> (
        Arc<Topic>,
        Vec<u32>,
        Vec<(
            u32,
            Vec<usize>,
            tokio::sync::oneshot::Receiver<partition::AppendReply>,
        )>,
    ) {
        let slots: Vec<u32> = records.iter().map(|r| topic.partition_for(r)).collect();
        let mut per: HashMap<u32, (Vec<usize>, Vec<Record>)> = HashMap::new();
        for (i, (r, p)) in records.into_iter().zip(&slots).enumerate() {
            let e = per.entry(*p).or_default();
            e.0.push(i);
            e.1.push(r);
        }
        let mut keys: Vec<u32> = per.keys().copied().collect();
        keys.sort_unstable();
        let mut waits = Vec::with_capacity(keys.len());
        for p in keys {
            if let (Some((indexes, recs)), Some(part)) =
                (per.remove(&p), topic.partitions.get(p as usize))
            {
                waits.push((p, indexes, part.append(recs)));
            }
        }
        (Arc::clone(topic), slots, waits)
    }

    async fn group_for_fetch(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        req: &FetchRequest,
    ) -> Result<Arc<Group>, EngineError> {
        validate_name("group", &req.group)?;
        let group = match topic.group(&req.group) {
            Some(g) => g,
            None => {
                let _guard = topic.group_create.lock().await;
                match topic.group(&req.group) {
                    Some(g) => g,
                    None => {
                        let config = GroupConfig {
                            mode: req.mode,
                            lease_ms: match req.lease_ms {
                                0 => u64::try_from(self.config.lease.as_millis()).unwrap_or(30_000),
                                ms => u64::from(ms),
                            },
                            max_attempts: match req.max_attempts {
                                0 => self.config.max_attempts,
                                n => n,
                            },
                            prefetch: match req.prefetch {
                                0 => self.config.prefetch,
                                n => n,
                            },
                        };
                        let this = Arc::clone(self);
                        let t = Arc::clone(topic);
                        let name = req.group.clone();
                        let g =
                            tokio::task::spawn_blocking(move || this.open_group(&t, &name, config))
                                .await
                                .map_err(|_| EngineError::ShuttingDown)??;
                        tracing::info!(topic = %topic.name, group = %req.group, mode = req.mode.name(), "created group");
                        topic
                            .groups
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(req.group.clone(), Arc::clone(&g));
                        g
                    }
                }
            }
        };
        let mode = group.state().config().mode;
        if mode != req.mode {
            return Err(EngineError::GroupMismatch {
                group: req.group.clone(),
                existing: mode.name(),
                requested: req.mode.name(),
            });
        }
        Ok(group)
    }

    /// Long-polls for deliveries for `consumer` (one per connection); returns an empty list
    /// when nothing arrived within the wait or when `shutdown` fires.
    pub async fn fetch(
        self: &Arc<Self>,
        consumer: ConsumerId,
        req: FetchRequest,
        shutdown: CancellationToken,
    ) -> Result<Vec<Delivery>, EngineError> {
        let topic = match self.topic(&req.topic) {
            Some(t) => t,
            None if self.config.auto_create_partitions > 0 => {
                validate_name("topic", &req.topic)?;
                self.ensure_topic(&req.topic, self.config.auto_create_partitions)
                    .await?
            }
            None => return Err(EngineError::UnknownTopic(req.topic)),
        };
        let group = self.group_for_fetch(&topic, &req).await?;
        let max = (req.max_records as usize).clamp(1, MAX_FETCH_RECORDS);
        let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_FETCH_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = topic.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ends = topic.readable_ends();
            let grants = group.state().poll(consumer, self.now_ms(), max, &ends);
            if !grants.is_empty() {
                return self.read_grants(&topic, &group, consumer, grants).await;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline || shutdown.is_cancelled() {
                return Ok(Vec::new());
            }
            let nap = (deadline - now).min(FETCH_RECHECK);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(nap) => {}
                () = shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    async fn read_grants(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        group: &Arc<Group>,
        consumer: ConsumerId,
        grants: Vec<crate::queue::Grant>,
    ) -> Result<Vec<Delivery>, EngineError> {
        let t = Arc::clone(topic);
        let wanted = grants.clone();
        let read = tokio::task::spawn_blocking(move || {
            // Consecutive offsets of one partition are read with one call.
            let mut out: Vec<(crate::queue::Grant, Option<crate::storage::StoredRecord>)> =
                Vec::with_capacity(wanted.len());
            let mut i = 0;
            let mut error = None;
            while i < wanted.len() {
                let g0 = wanted[i];
                let mut j = i + 1;
                while j < wanted.len()
                    && wanted[j].partition == g0.partition
                    && wanted[j].offset == wanted[j - 1].offset + 1
                {
                    j += 1;
                }
                let recs = match t.partitions.get(g0.partition as usize) {
                    Some(p) => p.read(g0.offset, j - i, usize::MAX),
                    None => Ok(Vec::new()),
                };
                let recs = match recs {
                    Ok(r) => r,
                    Err(e) => {
                        error.get_or_insert(e);
                        Vec::new()
                    }
                };
                let mut by_offset: HashMap<u64, crate::storage::StoredRecord> =
                    recs.into_iter().map(|r| (r.offset, r)).collect();
                for g in &wanted[i..j] {
                    out.push((*g, by_offset.remove(&g.offset)));
                }
                i = j;
            }
            (out, error)
        })
        .await
        .map_err(|_| EngineError::ShuttingDown)?;
        let (pairs, error) = read;
        if let Some(e) = &error {
            self.metrics.storage_errors.inc();
            tracing::error!(topic = %topic.name, error = %e, "read for a fetch failed");
        }
        let mut deliveries = Vec::with_capacity(pairs.len());
        let mut bytes = 0usize;
        let now = self.now_ms();
        let mut st = group.state();
        for (g, rec) in pairs {
            match rec {
                Some(r) if bytes < FETCH_MAX_BYTES => {
                    bytes += r.record.encoded_size() + 32;
                    deliveries.push(Delivery {
                        delivery_id: delivery_id(g.partition, g.offset),
                        partition: g.partition,
                        offset: g.offset,
                        attempt: g.attempt,
                        timestamp_ms: r.timestamp_ms,
                        record: r.record,
                    });
                }
                Some(_) => {
                    // Over the response budget: hand it back uncharged, it goes out next time.
                    st.take_back(g.partition, g.offset);
                }
                None => {
                    // Unreadable: retry later; the attempt counts, so a record that can never
                    // be read ends in the dead-letter path instead of blocking the group.
                    st.nack(
                        consumer,
                        now,
                        g.partition,
                        g.offset,
                        1000,
                        "record could not be read",
                    );
                }
            }
        }
        drop(st);
        if deliveries.is_empty()
            && let Some(e) = error
        {
            return Err(e.into());
        }
        self.metrics
            .delivered_records
            .get_or_create(&metrics::group_labels(&topic.name, group.name()))
            .inc_by(deliveries.len() as u64);
        Ok(deliveries)
    }

    fn group_of(&self, topic: &str, group: &str) -> Result<(Arc<Topic>, Arc<Group>), EngineError> {
        let t = self.topic_or_auto(topic)?;
        let g = t.group(group).ok_or_else(|| EngineError::UnknownGroup {
            topic: topic.to_string(),
            group: group.to_string(),
        })?;
        Ok((t, g))
    }

    /// Acknowledges deliveries; answers once the progress is durable (per the fsync policy).
    pub async fn ack(
        &self,
        consumer: ConsumerId,
        topic: &str,
        group: &str,
        ids: &[u64],
    ) -> Result<Vec<AckStatus>, EngineError> {
        let (_t, g) = self.group_of(topic, group)?;
        let now = self.now_ms();
        let mut statuses = Vec::with_capacity(ids.len());
        let mut done = Vec::new();
        {
            let mut st = g.state();
            for id in ids {
                let (p, o) = split_delivery_id(*id);
                statuses.push(match st.ack(consumer, now, p, o) {
                    AckOutcome::Acked => {
                        done.push((p, o));
                        AckStatus::Acked
                    }
                    AckOutcome::AlreadyAcked => AckStatus::AlreadyAcked,
                    AckOutcome::Unknown => AckStatus::Unknown,
                });
            }
        }
        g.persist(done)
            .await
            .map_err(|_| EngineError::ShuttingDown)??;
        Ok(statuses)
    }

    /// Hands deliveries back for a retry after `delay_ms`; ones out of attempts are moved to
    /// the dead-letter topic before this answers.
    pub async fn nack(
        self: &Arc<Self>,
        consumer: ConsumerId,
        topic: &str,
        group: &str,
        ids: &[u64],
        delay_ms: u32,
        reason: &str,
    ) -> Result<Vec<NackStatus>, EngineError> {
        let (t, g) = self.group_of(topic, group)?;
        let now = self.now_ms();
        let mut statuses = Vec::with_capacity(ids.len());
        let mut dead = Vec::new();
        {
            let mut st = g.state();
            for id in ids {
                let (p, o) = split_delivery_id(*id);
                statuses.push(
                    match st.nack(consumer, now, p, o, u64::from(delay_ms), reason) {
                        NackOutcome::Requeued => NackStatus::Requeued,
                        NackOutcome::DeadLetter(dl) => {
                            dead.push(dl);
                            NackStatus::DeadLettered
                        }
                        NackOutcome::Stale => NackStatus::Stale,
                        NackOutcome::Unknown => NackStatus::Unknown,
                    },
                );
            }
        }
        t.notify.notify_waiters();
        for dl in dead {
            self.dead_letter(&t, &g, dl).await?;
        }
        Ok(statuses)
    }

    /// Moves a record that ran out of attempts to `<topic>.dlq`, then marks it done.
    async fn dead_letter(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        group: &Arc<Group>,
        dl: DeadLetter,
    ) -> Result<(), EngineError> {
        let result = self.try_dead_letter(topic, group, &dl).await;
        if let Err(e) = &result {
            tracing::error!(topic = %topic.name, group = group.name(), partition = dl.partition, offset = dl.offset, error = %e, "dead-lettering failed; will retry");
            group
                .state()
                .dead_letter_failed(dl.partition, dl.offset, self.now_ms(), 1000);
        }
        result
    }

    async fn try_dead_letter(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        group: &Arc<Group>,
        dl: &DeadLetter,
    ) -> Result<(), EngineError> {
        let t = Arc::clone(topic);
        let (p, o) = (dl.partition, dl.offset);
        let original = tokio::task::spawn_blocking(move || match t.partitions.get(p as usize) {
            Some(part) => part.read(o, 1, usize::MAX),
            None => Ok(Vec::new()),
        })
        .await
        .map_err(|_| EngineError::ShuttingDown)??;
        if let Some(orig) = original.into_iter().next() {
            let mut record = orig.record;
            record.dedup_id = Some(format!("dlq:{}:{}:{}", group.name(), p, o));
            for (name, value) in [
                ("x-dlq-reason", dl.reason.clone()),
                ("x-dlq-topic", topic.name.clone()),
                ("x-dlq-group", group.name().to_string()),
                ("x-dlq-partition", p.to_string()),
                ("x-dlq-offset", o.to_string()),
                ("x-dlq-attempts", dl.attempts.to_string()),
            ] {
                record.headers.push(Header {
                    name: name.to_string(),
                    value: Bytes::from(value),
                });
            }
            let dlq_name = format!("{}{}", topic.name, DLQ_SUFFIX);
            self.ensure_topic(&dlq_name, 1).await?;
            self.produce(&dlq_name, vec![record]).await?;
            tracing::warn!(topic = %topic.name, group = group.name(), partition = p, offset = o, attempts = dl.attempts, reason = %dl.reason, "dead-lettered a record");
        }
        let news = group.state().dead_lettered(p, o);
        if news {
            group
                .persist(vec![(p, o)])
                .await
                .map_err(|_| EngineError::ShuttingDown)??;
        }
        Ok(())
    }

    /// A connection that fetched from `topic`/`group` closed: its deliveries go back.
    pub async fn leave(self: &Arc<Self>, consumer: ConsumerId, topic: &str, group: &str) {
        let Ok((t, g)) = self.group_of(topic, group) else {
            return;
        };
        let dead = g.state().leave(consumer, self.now_ms());
        t.notify.notify_waiters();
        for dl in dead {
            let _ = self.dead_letter(&t, &g, dl).await;
        }
    }

    /// Expires leases (every group) and applies retention (when `retention` is true).
    pub async fn maintain(self: &Arc<Self>, retention: bool) {
        for topic in self.topics() {
            let mut woke = false;
            for group in topic.groups() {
                let before = group.state().in_flight();
                let dead = group.state().tick(self.now_ms());
                woke |= group.state().in_flight() != before;
                for dl in dead {
                    let _ = self.dead_letter(&topic, &group, dl).await;
                }
            }
            if woke {
                topic.notify.notify_waiters();
            }
            if retention {
                self.retain(&topic).await;
            }
        }
    }

    async fn retain(&self, topic: &Arc<Topic>) {
        let bytes = match topic.config.retention_bytes {
            0 => self.config.retention_bytes,
            b => b,
        };
        let ms = match topic.config.retention_ms {
            0 => u64::try_from(self.config.retention.as_millis()).unwrap_or(0),
            ms => ms,
        };
        if bytes == 0 && ms == 0 {
            return;
        }
        let groups = topic.groups();
        for part in &topic.partitions {
            let min_done = if self.config.retention_ignores_groups {
                u64::MAX
            } else {
                groups
                    .iter()
                    .map(|g| g.state().committed(part.id()))
                    .min()
                    .unwrap_or(u64::MAX)
            };
            match part.retain(min_done, bytes, ms).await {
                Ok(Ok(n)) if n > 0 => {
                    tracing::info!(topic = %topic.name, partition = part.id(), segments = n, start_offset = part.start_offset(), "retention deleted segments");
                    for g in &groups {
                        g.state().advance_start(part.id(), part.start_offset());
                    }
                }
                Ok(Err(e)) => {
                    self.metrics.storage_errors.inc();
                    tracing::error!(topic = %topic.name, partition = part.id(), error = %e, "retention failed");
                }
                _ => {}
            }
        }
    }

    /// Topics, partitions and groups as JSON (one topic, or all when `topic` is empty).
    pub fn stats(&self, topic: &str) -> Result<serde_json::Value, EngineError> {
        let topics = if topic.is_empty() {
            self.topics()
        } else {
            vec![self.topic_or_auto(topic)?]
        };
        let mut out = Vec::new();
        for t in topics {
            let ends = t.readable_ends();
            let partitions: Vec<_> = t
                .partitions
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "partition": p.id(),
                        "start_offset": p.start_offset(),
                        "end_offset": p.readable_end(),
                        "bytes": p.size_bytes(),
                        "failed": p.is_failed(),
                    })
                })
                .collect();
            let mut groups: Vec<_> = t
                .groups()
                .into_iter()
                .map(|g| {
                    let st = g.state();
                    let parts: Vec<_> = ends
                        .iter()
                        .enumerate()
                        .map(|(i, end)| {
                            let p = i as u32;
                            serde_json::json!({
                                "partition": p,
                                "committed": st.committed(p),
                                "lag": st.lag(p, *end),
                                "owner": st.owner(p),
                            })
                        })
                        .collect();
                    let lag: u64 = (0..ends.len()).map(|i| st.lag(i as u32, ends[i])).sum();
                    let cfg = st.config();
                    serde_json::json!({
                        "name": g.name(),
                        "mode": cfg.mode,
                        "lease_ms": cfg.lease_ms,
                        "max_attempts": cfg.max_attempts,
                        "prefetch": cfg.prefetch,
                        "consumers": st.consumer_count(),
                        "in_flight": st.in_flight(),
                        "lag": lag,
                        "redeliveries": st.redeliveries(),
                        "dead_letters": st.dead_letters(),
                        "partitions": parts,
                    })
                })
                .collect();
            groups.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            out.push(serde_json::json!({
                "name": t.name,
                "partitions": t.config.partitions,
                "retention_bytes": t.config.retention_bytes,
                "retention_ms": t.config.retention_ms,
                "end_offset": ends.iter().sum::<u64>(),
                "partition_stats": partitions,
                "groups": groups,
            }));
        }
        Ok(serde_json::json!({ "topics": out }))
    }

    /// Sets the gauges that mirror state, just before a scrape.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        for t in self.topics() {
            let ends = t.readable_ends();
            for p in &t.partitions {
                let l = metrics::partition_labels(&t.name, p.id());
                m.partition_end_offset
                    .get_or_create(&l)
                    .set(gauge(p.readable_end()));
                m.partition_start_offset
                    .get_or_create(&l)
                    .set(gauge(p.start_offset()));
                m.partition_bytes
                    .get_or_create(&l)
                    .set(gauge(p.size_bytes()));
            }
            for g in t.groups() {
                let st = g.state();
                for (i, end) in ends.iter().enumerate() {
                    let p = i as u32;
                    let l = metrics::group_partition_labels(&t.name, g.name(), p);
                    m.group_committed_offset
                        .get_or_create(&l)
                        .set(gauge(st.committed(p)));
                    m.group_lag.get_or_create(&l).set(gauge(st.lag(p, *end)));
                }
                let l = metrics::group_labels(&t.name, g.name());
                m.group_in_flight
                    .get_or_create(&l)
                    .set(gauge(st.in_flight() as u64));
                m.group_consumers
                    .get_or_create(&l)
                    .set(gauge(st.consumer_count() as u64));
                let key = (t.name.clone(), g.name().to_string());
                let (r0, d0) = reported.get(&key).copied().unwrap_or((0, 0));
                let (r1, d1) = (st.redeliveries(), st.dead_letters());
                m.group_redeliveries
                    .get_or_create(&l)
                    .inc_by(r1.saturating_sub(r0));
                m.group_dead_letters
                    .get_or_create(&l)
                    .inc_by(d1.saturating_sub(d0));
                reported.insert(key, (r1.max(r0), d1.max(d0)));
            }
        }
    }

    /// Stops every writer and journal after what they hold is written and synced.
    pub fn close(&self) {
        for t in self.topics() {
            for g in t.groups() {
                g.close();
            }
            for p in &t.partitions {
                p.close();
            }
        }
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A delivery id: the partition in the top 16 bits, the offset in the low 48.
pub fn delivery_id(partition: u32, offset: u64) -> u64 {
    (u64::from(partition) << 48) | (offset & 0xFFFF_FFFF_FFFF)
}

/// The partition and offset of a delivery id.
pub fn split_delivery_id(id: u64) -> (u32, u64) {
    (
        u32::try_from(id >> 48).unwrap_or(u32::MAX),
        id & 0xFFFF_FFFF_FFFF,
    )
}

/// Whether `mode` is the one a group was created with (used by tests and tools).
pub fn mode_name(mode: FetchMode) -> &'static str {
    mode.name()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        // Published FNV-1a test vectors: the partition of a key must never change.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn delivery_ids_round_trip() {
        assert_eq!(split_delivery_id(delivery_id(7, 123_456)), (7, 123_456));
        assert_eq!(
            split_delivery_id(delivery_id(1023, (1 << 48) - 1)),
            (1023, (1 << 48) - 1)
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("topic", "purchases").is_ok());
        assert!(validate_name("topic", "purchases.dlq").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_name("topic", bad).is_err(), "{bad:?}");
        }
    }
}
