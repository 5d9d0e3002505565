//! The broker's Prometheus metrics. The registry is made by the caller and passed in; gauges
//! that mirror state (offsets, lag, in flight) are refreshed just before each scrape.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set: pairs of name and value, all bounded (api names, topics, groups, partitions).
pub type Labels = Vec<(&'static str, String)>;

fn latency() -> Histogram {
    // 50 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Pre-resolved per-api metric handles, so the request path does no label lookups.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    /// Successful requests.
    pub ok: Counter,
    /// Requests answered with an error.
    pub error: Counter,
    /// Latency.
    pub duration: Histogram,
}

/// Every metric the broker exports.
#[derive(Debug)]
pub struct Metrics {
    /// Handles per api key, indexed by the key's number.
    pub apis: Vec<ApiMetrics>,
    /// Requests by api and outcome.
    pub requests: Family<Labels, Counter>,
    /// Request latency by api.
    pub request_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Records appended by topic.
    pub produced_records: Family<Labels, Counter>,
    /// Produced records that repeated a dedup id.
    pub duplicate_records: Family<Labels, Counter>,
    /// Deliveries handed out by topic and group.
    pub delivered_records: Family<Labels, Counter>,
    /// fdatasync latency.
    pub fsync_duration: Histogram,
    /// Records per fdatasync (group commit size).
    pub fsync_batch_records: Histogram,
    /// Bytes cut by recovery, by topic and partition.
    pub recovery_truncated_bytes: Family<Labels, Counter>,
    /// Recoveries that cut something.
    pub recovery_truncations: Family<Labels, Counter>,
    /// End offset per partition.
    pub partition_end_offset: Family<Labels, Gauge>,
    /// Start (oldest retained) offset per partition.
    pub partition_start_offset: Family<Labels, Gauge>,
    /// Bytes on disk per partition.
    pub partition_bytes: Family<Labels, Gauge>,
    /// Committed offset per group and partition.
    pub group_committed_offset: Family<Labels, Gauge>,
    /// Records not yet done per group and partition.
    pub group_lag: Family<Labels, Gauge>,
    /// Deliveries out with consumers per group.
    pub group_in_flight: Family<Labels, Gauge>,
    /// Live consumers per group.
    pub group_consumers: Family<Labels, Gauge>,
    /// Redeliveries per group.
    pub group_redeliveries: Family<Labels, Counter>,
    /// Dead letters per group.
    pub group_dead_letters: Family<Labels, Counter>,
    /// Open client connections.
    pub connections: Gauge,
    /// Client connections accepted.
    pub connections_accepted: Counter,
    /// Connections refused at the connection limit.
    pub connections_rejected: Counter,
    /// Protocol errors answered, by error code.
    pub protocol_errors: Family<Labels, Counter>,
    /// Storage errors (failed writes, syncs, reads).
    pub storage_errors: Counter,
    /// 1 while this broker leads its cluster and serves clients.
    pub cluster_leader: Gauge,
    /// 1 while this broker knows a leader of its cluster.
    pub cluster_has_leader: Gauge,
    /// The cluster's epoch (Raft term) as this broker knows it.
    pub cluster_epoch: Gauge,
    /// Leaderships this broker took (elections it won and recovered from).
    pub cluster_leaderships: Counter,
    /// 1 while this broker is drained (stands for no election).
    pub cluster_draining: Gauge,
    /// Records a follower lacks, per partition this broker leads.
    pub replica_lag_records: Family<Labels, Gauge>,
    /// Seconds since a follower last held everything this broker had written, per partition
    /// this broker leads.
    pub replica_lag_seconds: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 for a partition this broker leads with a follower out of sync (see REPLICATION.md).
    pub partition_under_replicated: Family<Labels, Gauge>,
    /// Replicas in sync (this leader included), per partition this broker leads.
    pub partition_in_sync_replicas: Family<Labels, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them under `broker_`.
    pub fn new(registry: &mut Registry) -> Self {
        let mut m = Self {
            apis: Vec::new(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            produced_records: Family::default(),
            duplicate_records: Family::default(),
            delivered_records: Family::default(),
            fsync_duration: latency(),
            fsync_batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            recovery_truncated_bytes: Family::default(),
            recovery_truncations: Family::default(),
            partition_end_offset: Family::default(),
            partition_start_offset: Family::default(),
            partition_bytes: Family::default(),
            group_committed_offset: Family::default(),
            group_lag: Family::default(),
            group_in_flight: Family::default(),
            group_consumers: Family::default(),
            group_redeliveries: Family::default(),
            group_dead_letters: Family::default(),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_rejected: Counter::default(),
            protocol_errors: Family::default(),
            storage_errors: Counter::default(),
            cluster_leader: Gauge::default(),
            cluster_has_leader: Gauge::default(),
            cluster_epoch: Gauge::default(),
            cluster_leaderships: Counter::default(),
            cluster_draining: Gauge::default(),
            replica_lag_records: Family::default(),
            replica_lag_seconds: Family::default(),
            partition_under_replicated: Family::default(),
            partition_in_sync_replicas: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("broker");
        r.register(
            "requests",
            "Requests by api and outcome",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request latency by api, from decode to response queued",
            m.request_duration.clone(),
        );
        r.register(
            "produced_records",
            "Records appended",
            m.produced_records.clone(),
        );
        r.register(
            "duplicate_records",
            "Produced records that repeated a dedup id within the window",
            m.duplicate_records.clone(),
        );
        r.register(
            "delivered_records",
            "Deliveries handed to consumers",
            m.delivered_records.clone(),
        );
        r.register(
            "fsync_duration_seconds",
            "fdatasync latency",
            m.fsync_duration.clone(),
        );
        r.register(
            "fsync_batch_records",
            "Records made durable by one fdatasync (group commit)",
            m.fsync_batch_records.clone(),
        );
        r.register(
            "recovery_truncated_bytes",
            "Bytes of torn or corrupt tail cut by recovery at start",
            m.recovery_truncated_bytes.clone(),
        );
        r.register(
            "recovery_truncations",
            "Partitions or group journals whose tail recovery cut at start",
            m.recovery_truncations.clone(),
        );
        r.register(
            "partition_end_offset",
            "Offset the next record will get",
            m.partition_end_offset.clone(),
        );
        r.register(
            "partition_start_offset",
            "Oldest retained offset",
            m.partition_start_offset.clone(),
        );
        r.register(
            "partition_bytes",
            "Bytes of log on disk",
            m.partition_bytes.clone(),
        );
        r.register(
            "group_committed_offset",
            "Every offset below this is done for the group",
            m.group_committed_offset.clone(),
        );
        r.register(
            "group_lag",
            "Records not yet done by the group",
            m.group_lag.clone(),
        );
        r.register(
            "group_in_flight",
            "Deliveries out with consumers",
            m.group_in_flight.clone(),
        );
        r.register(
            "group_consumers",
            "Consumers seen within the lease time",
            m.group_consumers.clone(),
        );
        r.register(
            "group_redeliveries",
            "Deliveries after the first",
            m.group_redeliveries.clone(),
        );
        r.register(
            "group_dead_letters",
            "Records moved to the dead-letter topic",
            m.group_dead_letters.clone(),
        );
        r.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "Client connections accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "connections_rejected",
            "Client connections refused at the connection limit",
            m.connections_rejected.clone(),
        );
        r.register(
            "protocol_errors",
            "Error responses by code",
            m.protocol_errors.clone(),
        );
        r.register(
            "storage_errors",
            "Failed disk writes, syncs and reads",
            m.storage_errors.clone(),
        );
        r.register(
            "cluster_leader",
            "1 while this broker leads its cluster and serves clients",
            m.cluster_leader.clone(),
        );
        r.register(
            "cluster_has_leader",
            "1 while this broker knows a leader of its cluster",
            m.cluster_has_leader.clone(),
        );
        r.register(
            "cluster_epoch",
            "The cluster's epoch (Raft term) as this broker knows it",
            m.cluster_epoch.clone(),
        );
        r.register(
            "cluster_leaderships",
            "Leaderships this broker took",
            m.cluster_leaderships.clone(),
        );
        r.register(
            "cluster_draining",
            "1 while this broker is drained: it stands for no election",
            m.cluster_draining.clone(),
        );
        r.register(
            "replica_lag_records",
            "Records a follower lacks, per partition this broker leads",
            m.replica_lag_records.clone(),
        );
        r.register(
            "replica_lag_seconds",
            "Seconds since a follower last held all this broker had written",
            m.replica_lag_seconds.clone(),
        );
        r.register(
            "partition_under_replicated",
            "1 for a partition this broker leads with a follower out of sync",
            m.partition_under_replicated.clone(),
        );
        r.register(
            "partition_in_sync_replicas",
            "Replicas in sync, the leader included, per partition this broker leads",
            m.partition_in_sync_replicas.clone(),
        );
        let mut apis = Vec::with_capacity(crate::protocol::ApiKey::ALL.len());
        for api in crate::protocol::ApiKey::ALL {
            // One statement per lookup: a Family guard lives to the end of its statement, and
            // a second lookup in the same statement would wait on the first guard's lock.
            let name = api.name().to_string();
            let ok_labels = vec![("api", name.clone()), ("outcome", "ok".to_string())];
            let ok = m.requests.get_or_create(&ok_labels).clone();
            let err_labels = vec![("api", name.clone()), ("outcome", "error".to_string())];
            let error = m.requests.get_or_create(&err_labels).clone();
            let duration = m
                .request_duration
                .get_or_create(&vec![("api", name)])
                .clone();
            apis.push(ApiMetrics {
                ok,
                error,
                duration,
            });
        }
        m.apis = apis;
        m
    }

    /// Counts a finished request and its latency.
    pub fn observe(&self, api: crate::protocol::ApiKey, ok: bool, seconds: f64) {
        if let Some(h) = self.apis.get(api as usize) {
            if ok { &h.ok } else { &h.error }.inc();
            h.duration.observe(seconds);
        }
    }
}

/// Labels for a topic.
pub fn topic_labels(topic: &str) -> Labels {
    vec![("topic", topic.to_string())]
}

/// Labels for a topic partition.
pub fn partition_labels(topic: &str, partition: u32) -> Labels {
    vec![
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

/// Labels for a follower of a topic partition.
pub fn replica_labels(topic: &str, partition: u32, follower: u64) -> Labels {
    vec![
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
        ("follower", follower.to_string()),
    ]
}

/// Labels for a group.
pub fn group_labels(topic: &str, group: &str) -> Labels {
    vec![("topic", topic.to_string()), ("group", group.to_string())]
}

/// Labels for a group's partition.
pub fn group_partition_labels(topic: &str, group: &str, partition: u32) -> Labels {
    vec![
        ("topic", topic.to_string()),
        ("group", group.to_string()),
        ("partition", partition.to_string()),
    ]
}
