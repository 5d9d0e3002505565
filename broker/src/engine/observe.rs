//! What operators see: the stats document and the gauges refreshed before each scrape.

use std::sync::PoisonError;

use super::{Broker, EngineError};
use crate::metrics;

impl Broker {
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
                        "log_end_offset": p.written_end(),
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
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
