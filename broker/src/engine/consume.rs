//! Consuming: long-poll fetches, acknowledgements, negative acknowledgements, dead letters
//! and consumers leaving. The semantics live in the pure state machine (`crate::groups::state`);
//! this is where it meets the logs and the journals.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::group_runtime::Group;
use super::{
    Broker, DLQ_SUFFIX, EngineError, FETCH_MAX_BYTES, FETCH_RECHECK, MAX_FETCH_RECORDS,
    MAX_FETCH_WAIT, Topic, delivery_id, split_delivery_id, validate_name,
};
use crate::groups::journal::Entry;
use crate::groups::{AckOutcome, ConsumerId, CountsToWrite, DeadLetter, GroupConfig, NackOutcome};
use crate::metrics;
use crate::protocol::{AckStatus, Delivery, FetchRequest, Header, NackStatus};

/// How long after a failed move to the dead-letter topic it is tried again.
const DEAD_LETTER_RETRY_MS: u64 = 1_000;

impl Broker {
    async fn group_for_fetch(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        req: &FetchRequest,
    ) -> Result<Arc<Group>, EngineError> {
        validate_name("group", &req.group)?;
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
        let group = self.ensure_group(topic, &req.group, config).await?;
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
        grants: Vec<crate::groups::Grant>,
    ) -> Result<Vec<Delivery>, EngineError> {
        let t = Arc::clone(topic);
        let wanted = grants.clone();
        let read = self
            .host
            .blocking(move || {
                // Consecutive offsets of one partition are read with one call.
                let mut out: Vec<(crate::groups::Grant, Option<crate::storage::StoredRecord>)> =
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
            .ok_or(EngineError::ShuttingDown)?;
        let (pairs, error) = read;
        if let Some(e) = &error {
            self.metrics.storage_errors.inc();
            tracing::error!(topic = %topic.name, error = %e, "read for a fetch failed");
        }
        let mut deliveries = Vec::with_capacity(pairs.len());
        let mut granted = Vec::with_capacity(pairs.len());
        let mut bytes = 0usize;
        let now = self.now_ms();
        {
            let mut st = group.state();
            for (g, rec) in pairs {
                match rec {
                    Some(r) if bytes < FETCH_MAX_BYTES => {
                        bytes += r.record.encoded_size() + 32;
                        granted.push(g);
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
        }
        if deliveries.is_empty()
            && let Some(e) = error
        {
            return Err(e.into());
        }
        // Each delivery is counted on disk before it is handed out, so that no restart lets a
        // record be delivered more often than the group's maximum (first deliveries are covered
        // by a mark written ahead: most fetches write nothing).
        let counts = group.state().counts_to_write(&granted);
        if !counts.is_empty() {
            let entries = journal_entries(&counts);
            let written = self.persist_group(topic, group, entries).await;
            let mut st = group.state();
            st.counts_written(&counts, written.is_ok());
            if let Err(e) = written {
                // Not counted, not handed out: they go out again, uncharged.
                for g in &granted {
                    st.take_back(g.partition, g.offset);
                }
                return Err(e);
            }
        }
        // A lease may have ended while the count was written (and the record gone to another
        // consumer, or been acknowledged): only what this consumer still holds goes out, and
        // its lease runs from now.
        {
            let now = self.now_ms();
            let mut st = group.state();
            deliveries.retain(|d| st.hand_out(consumer, now, d.partition, d.offset));
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
        let (t, g) = self.group_of(topic, group)?;
        let now = self.now_ms();
        let mut statuses = Vec::with_capacity(ids.len());
        let mut done = Vec::new();
        {
            let mut st = g.state();
            for id in ids {
                let (p, o) = split_delivery_id(*id);
                statuses.push(match st.ack(consumer, now, p, o) {
                    AckOutcome::Acked => {
                        done.push(Entry::Done {
                            partition: p,
                            offset: o,
                        });
                        AckStatus::Acked
                    }
                    AckOutcome::AlreadyAcked => AckStatus::AlreadyAcked,
                    AckOutcome::Unknown => AckStatus::Unknown,
                });
            }
        }
        self.persist_group(&t, &g, done).await?;
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

    /// Moves a record that ran out of attempts to `<topic>.dlq`, then marks it done. If that
    /// fails the record is not delivered again: maintenance tries the move again later.
    pub(super) async fn dead_letter(
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
                .dead_letter_failed(dl, self.now_ms(), DEAD_LETTER_RETRY_MS);
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
        let original = self
            .host
            .blocking(move || match t.partitions.get(p as usize) {
                Some(part) => part.read(o, 1, usize::MAX),
                None => Ok(Vec::new()),
            })
            .await
            .ok_or(EngineError::ShuttingDown)??;
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
            let done = vec![Entry::Done {
                partition: p,
                offset: o,
            }];
            self.persist_group(topic, group, done).await?;
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
}

/// The group-journal entries that write `counts`.
fn journal_entries(counts: &CountsToWrite) -> Vec<Entry> {
    let marks = counts
        .marks
        .iter()
        .map(|&(partition, mark)| Entry::Counted { partition, mark });
    let deliveries = counts
        .deliveries
        .iter()
        .map(|&(partition, offset, attempts)| Entry::Delivered {
            partition,
            offset,
            attempts,
        });
    marks.chain(deliveries).collect()
}
