//! What this broker shows of the cluster: its view for `broker stats`, and the gauges refreshed
//! before each scrape.

use std::sync::PoisonError;

use super::leader::{FollowerLag, REPLICA_LAG_TIME};
use super::node::Cluster;

/// A partition this broker leads, as the metrics and stats show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplication {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The epoch it is led in.
    pub epoch: u64,
    /// Each follower, and how far behind it is.
    pub lags: Vec<FollowerLag>,
}

impl PartitionReplication {
    /// Whether a follower has not held everything written here for [`REPLICA_LAG_TIME`].
    pub fn is_under_replicated(&self) -> bool {
        self.lags.iter().any(|l| l.behind >= REPLICA_LAG_TIME)
    }

    /// The replicas in sync: the leader, and each follower that held everything written here
    /// within [`REPLICA_LAG_TIME`].
    pub fn in_sync(&self) -> usize {
        1 + self
            .lags
            .iter()
            .filter(|l| l.behind < REPLICA_LAG_TIME)
            .count()
    }
}

impl Cluster {
    /// This broker's view of the cluster, for `broker stats`.
    pub fn status(&self) -> serde_json::Value {
        let raft = self.raft.metrics().borrow().clone();
        let replication: Vec<serde_json::Value> = self
            .replication()
            .into_iter()
            .map(|p| {
                let followers: Vec<serde_json::Value> = p
                    .lags
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "node": l.node,
                            "lag_records": l.records,
                            "lag_seconds": l.behind.as_secs_f64(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "topic": p.topic,
                    "partition": p.partition,
                    "epoch": p.epoch,
                    "under_replicated": p.is_under_replicated(),
                    "in_sync_replicas": p.in_sync(),
                    "followers": followers,
                })
            })
            .collect();
        serde_json::json!({
            "node": self.config.node_id,
            "epoch": raft.current_term,
            "leader": raft.current_leader,
            "serving": self.serving().ready,
            "draining": self.is_draining(),
            "joining": self.joining_epoch().is_some(),
            "members": self.config.peers.keys().collect::<Vec<_>>(),
            "replication": replication,
        })
    }

    /// Sets the cluster's gauges, just before a scrape.
    pub fn refresh_metrics(&self) {
        let m = self.broker.metrics();
        let raft = self.raft.metrics().borrow().clone();
        m.cluster_leader.set(i64::from(self.serving().ready));
        m.cluster_has_leader
            .set(i64::from(raft.current_leader.is_some()));
        m.cluster_epoch
            .set(i64::try_from(raft.current_term).unwrap_or(i64::MAX));
        m.cluster_draining.set(i64::from(self.is_draining()));
        // A broker that stopped leading keeps no stale series.
        m.replica_lag_records.clear();
        m.replica_lag_seconds.clear();
        m.partition_under_replicated.clear();
        m.partition_in_sync_replicas.clear();
        for p in self.replication() {
            for lag in &p.lags {
                let l = crate::metrics::replica_labels(&p.topic, p.partition, lag.node);
                m.replica_lag_records
                    .get_or_create(&l)
                    .set(i64::try_from(lag.records).unwrap_or(i64::MAX));
                m.replica_lag_seconds
                    .get_or_create(&l)
                    .set(lag.behind.as_secs_f64());
            }
            let labels = crate::metrics::partition_labels(&p.topic, p.partition);
            m.partition_under_replicated
                .get_or_create(&labels)
                .set(i64::from(p.is_under_replicated()));
            m.partition_in_sync_replicas
                .get_or_create(&labels)
                .set(i64::try_from(p.in_sync()).unwrap_or(i64::MAX));
        }
    }

    /// Per partition led here: how far behind each follower is (empty when not leading).
    pub fn replication(&self) -> Vec<PartitionReplication> {
        self.current_leadership().map_or_else(Vec::new, |l| {
            l.led
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|((topic, partition), led)| PartitionReplication {
                    topic: topic.clone(),
                    partition: *partition,
                    epoch: l.epoch,
                    lags: led.lags(),
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_follower_behind_for_the_lag_time_is_out_of_sync() {
        let lag = |node, secs| FollowerLag {
            node,
            records: 0,
            behind: Duration::from_secs(secs),
        };
        let p = |lags| PartitionReplication {
            topic: "t".into(),
            partition: 0,
            epoch: 3,
            lags,
        };
        let healthy = p(vec![lag(2, 0), lag(3, 4)]);
        assert_eq!(healthy.in_sync(), 3);
        assert!(!healthy.is_under_replicated());
        let one_behind = p(vec![lag(2, 0), lag(3, 5)]);
        assert_eq!(one_behind.in_sync(), 2);
        assert!(one_behind.is_under_replicated());
    }
}
