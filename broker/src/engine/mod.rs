//! The broker's core: topics, partitions and groups, and the operations the server exposes.
//!
//! The server decodes requests and calls these methods; they return typed results or an
//! [`EngineError`], which the server maps to a wire error code in one place.

pub mod commit;
mod consume;
pub mod group_replication;
pub mod group_runtime;
pub mod host;
mod observe;
pub mod partition;
pub mod produce;
mod replicated_groups;
pub mod syncer;
pub mod thread;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::groups::GroupConfig;
use crate::groups::journal::write_atomic;
use crate::metrics::{self, Metrics};
use crate::protocol::{FetchMode, Record};
use crate::storage::{LogConfig, StorageError};
use group_runtime::Group;
use host::Host;
use partition::Partition;

pub use crate::config::MAX_PARTITIONS;
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
    /// In a cluster, this broker does not serve the request: it does not lead (the message
    /// names the leader when it is known).
    #[error("{0}")]
    NotLeader(String),
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

    /// Its partitions, in order.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// The progress of group `name` as its state holds it (durable progress after a restart).
    pub fn group_progress(&self, name: &str) -> Option<Vec<crate::groups::PartitionProgress>> {
        self.group(name).map(|g| g.state().progress())
    }

    /// Tells `group` what retention deleted: nothing below a partition's start is delivered.
    fn skip_deleted(&self, group: &Group) {
        let mut st = group.state();
        for p in &self.partitions {
            st.advance_start(p.id(), p.start_offset());
        }
    }

    /// Tells every group that `part`'s log starts at its start offset now: retention, or a
    /// replica's restart at its leader's start, deleted what lies below.
    pub fn start_moved(&self, part: &Partition) {
        for g in self.groups() {
            g.state().advance_start(part.id(), part.start_offset());
        }
    }

    fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every group, by name: maintenance visits them in a stable order.
    fn groups(&self) -> Vec<Arc<Group>> {
        let mut groups: Vec<Arc<Group>> = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        groups.sort_by(|a, b| a.name().cmp(b.name()));
        groups
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

/// Checks a topic's partition count: 1 to [`MAX_PARTITIONS`].
pub fn validate_partitions(partitions: u32) -> Result<(), EngineError> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(EngineError::Invalid(format!(
            "partitions must be 1 to {MAX_PARTITIONS}, not {partitions}"
        )));
    }
    Ok(())
}

/// The broker's state.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    metrics: Arc<Metrics>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    topic_create: tokio::sync::Mutex<()>,
    host: Arc<Host>,
    reported: std::sync::Mutex<HashMap<(String, String), (u64, u64)>>,
    group_replication: std::sync::OnceLock<Arc<dyn group_replication::GroupReplication>>,
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
        Self::open_on(Host::os(), config, metrics)
    }

    /// [`Broker::open`] on a given host: the simulator's disk, clock and steps.
    pub fn open_on(
        host: Arc<Host>,
        config: BrokerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, EngineError> {
        if !host.is_stepped() {
            syncer::start();
        }
        let disk = Arc::clone(host.disk());
        let dir = topics_dir(&config.data_dir);
        crate::storage::create_dir_durable(&*disk, &config.data_dir, &dir)
            .map_err(|e| StorageError::io("create", &dir, e))?;
        let probe = config.data_dir.join(".write-probe");
        disk.open(&probe)
            .and_then(|f| f.write_all_at(b"ok", 0))
            .and_then(|()| disk.remove_file(&probe))
            .map_err(|e| StorageError::io("write to", &config.data_dir, e))?;
        let broker = Self {
            config,
            metrics,
            topics: RwLock::new(HashMap::new()),
            topic_create: tokio::sync::Mutex::new(()),
            host,
            reported: std::sync::Mutex::new(HashMap::new()),
            group_replication: std::sync::OnceLock::new(),
        };
        let mut names: Vec<String> = disk
            .list(&dir)
            .map_err(|e| StorageError::io("list", &dir, e))?
            .into_iter()
            .filter(|name| disk.exists(&dir.join(name).join("topic.json")))
            .collect();
        names.sort();
        for name in names {
            let raw = crate::storage::read_stable(&*disk, &dir.join(&name).join("topic.json"))
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

    /// The host the broker runs on.
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.host.clock().elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The directory of partition `partition` of topic `topic`.
    pub fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        topics_dir(&self.config.data_dir)
            .join(topic)
            .join(partition.to_string())
    }

    fn open_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>, EngineError> {
        let notify = Arc::new(Notify::new());
        let log_config = LogConfig {
            segment_bytes: self.config.segment_bytes,
            max_record_bytes: self.config.max_frame_bytes + 1024,
        };
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let part_dir = self.partition_dir(name, p);
            crate::storage::create_dir_durable(
                &**self.host.disk(),
                &self.config.data_dir,
                &part_dir,
            )
            .map_err(|e| StorageError::io("create", &part_dir, e))?;
            let (part, report) = Partition::open(
                &self.host,
                name,
                p,
                &part_dir,
                log_config,
                self.config.fsync,
                self.config.dedup_window,
                Arc::clone(&notify),
                Arc::clone(&self.metrics),
                if self.config.cluster.is_some() {
                    partition::CommitMode::Replicated
                } else {
                    partition::CommitMode::Local
                },
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
        let disk = self.host.disk();
        let Ok(mut names) = disk.list(&dir) else {
            return Ok(());
        };
        names.sort();
        for name in names {
            let Some(config) = crate::groups::journal::read_config(&**disk, &dir.join(&name))?
            else {
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
        crate::storage::create_dir_durable(&**self.host.disk(), &self.config.data_dir, &dir)
            .map_err(|e| StorageError::io("create", &dir, e))?;
        let (group, cut) = Group::open(
            &self.host,
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
        topic.skip_deleted(&group);
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
        validate_partitions(partitions)?;
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
        let topic = self
            .host
            .blocking(move || -> Result<Arc<Topic>, EngineError> {
                let dir = topics_dir(&this.config.data_dir).join(&name_owned);
                let disk = this.host.disk();
                crate::storage::create_dir_durable(&**disk, &this.config.data_dir, &dir)
                    .map_err(|e| StorageError::io("create", &dir, e))?;
                let topic = this.open_topic(&name_owned, config)?;
                let raw = serde_json::to_vec_pretty(&config).unwrap_or_default();
                write_atomic(&**disk, &dir.join("topic.json"), &raw)?;
                Ok(topic)
            })
            .await
            .ok_or(EngineError::ShuttingDown)??;
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

    /// Applies retention to every topic, and nothing else: what a follower in a cluster does
    /// (its leases and dead letters are its leader's), below the commit point it knows.
    pub async fn apply_retention(&self) {
        for topic in self.topics() {
            self.retain(&topic).await;
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
            // Never a record that is not committed: in a cluster it may yet be replaced, and a
            // follower must be able to get it from this log.
            let min_done = min_done.min(part.readable_end());
            let t = Arc::clone(topic);
            let index = part.id() as usize;
            let retained = self
                .host
                .blocking(move || {
                    t.partitions
                        .get(index)
                        .map(|p| p.retain(min_done, bytes, ms))
                })
                .await;
            match retained {
                Some(Some(Ok(n))) if n > 0 => {
                    tracing::info!(topic = %topic.name, partition = part.id(), segments = n, start_offset = part.start_offset(), "retention deleted segments");
                    topic.start_moved(part);
                }
                Some(Some(Err(e))) => {
                    self.metrics.storage_errors.inc();
                    tracing::error!(topic = %topic.name, partition = part.id(), error = %e, "retention failed");
                }
                _ => {}
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
