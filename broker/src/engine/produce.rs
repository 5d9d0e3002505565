//! The produce path: append now, on the caller's thread; acknowledge once committed.
//!
//! Appending at once keeps pipelined produces from one connection in order. The outcome is
//! ready when there is nothing to wait for (a failure, or repeats whose records are committed)
//! and a future otherwise, which resolves once the partitions' flush committed the records.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use super::commit::Wait;
use super::partition::Appended;
use super::{Broker, EngineError, Topic};
use crate::protocol::{ProduceAck, Record};
use crate::storage::StorageError;

/// What a produce's acknowledgement waits for.
pub type Pending = Pin<Box<dyn Future<Output = Result<Vec<ProduceAck>, EngineError>> + Send>>;

/// The outcome of [`Broker::produce`]: known now, or once the records are committed.
pub enum Produced {
    /// Every record is committed (or the produce failed).
    Ready(Result<Vec<ProduceAck>, EngineError>),
    /// Appended (or waiting for the topic's creation); resolves when committed.
    Waiting(Pending),
}

impl std::fmt::Debug for Produced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Self::Waiting(_) => f.write_str("Waiting"),
        }
    }
}

impl IntoFuture for Produced {
    type Output = Result<Vec<ProduceAck>, EngineError>;
    type IntoFuture = Pending;

    fn into_future(self) -> Pending {
        match self {
            Self::Ready(r) => Box::pin(std::future::ready(r)),
            Self::Waiting(f) => f,
        }
    }
}

/// A produce's records as appended: per partition, the request indexes it holds and its append.
struct Staged {
    records: usize,
    appended: Vec<(u32, Vec<usize>, Appended)>,
}

impl Staged {
    /// Appends each partition's share of `records` (in partition order).
    fn append(topic: &Topic, records: &[Record]) -> Result<Self, EngineError> {
        let mut per: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            per.entry(topic.partition_for(r)).or_default().push(i);
        }
        let mut appended = Vec::with_capacity(per.len());
        for (p, indexes) in per {
            let Some(part) = topic.partitions.get(p as usize) else {
                continue;
            };
            let mine: Vec<&Record> = indexes.iter().filter_map(|i| records.get(*i)).collect();
            appended.push((p, indexes, part.append(&mine)?));
        }
        Ok(Self {
            records: records.len(),
            appended,
        })
    }

    /// Ready when every partition's append is committed; else a future that waits for them.
    fn outcome(mut self) -> Produced {
        let mut waits = Vec::new();
        for (_, _, appended) in &mut self.appended {
            match std::mem::replace(&mut appended.committed, Wait::Done) {
                Wait::Done => {}
                Wait::Pending(rx) => waits.push(rx),
                Wait::Fenced => return Produced::Ready(Err(StorageError::Fenced.into())),
            }
        }
        if waits.is_empty() {
            return Produced::Ready(Ok(self.acks()));
        }
        Produced::Waiting(Box::pin(async move {
            for rx in waits {
                match rx.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => return Err(EngineError::ShuttingDown),
                }
            }
            Ok(self.acks())
        }))
    }

    /// The acknowledgements, in request order.
    fn acks(self) -> Vec<ProduceAck> {
        let mut acks = vec![
            ProduceAck {
                partition: 0,
                offset: 0,
                duplicate: false
            };
            self.records
        ];
        for (partition, indexes, appended) in self.appended {
            for (i, (offset, duplicate)) in indexes.into_iter().zip(appended.answers) {
                if let Some(a) = acks.get_mut(i) {
                    *a = ProduceAck {
                        partition,
                        offset,
                        duplicate,
                    };
                }
            }
        }
        acks
    }
}

impl Broker {
    /// Appends `records` to their partitions now, in order; the outcome is ready, or resolves,
    /// once every one is committed (durable per the fsync policy), with acks in request order.
    pub fn produce(self: &Arc<Self>, topic_name: &str, records: Vec<Record>) -> Produced {
        if let Some(topic) = self.topic(topic_name) {
            return match Staged::append(&topic, &records) {
                Ok(staged) => staged.outcome(),
                Err(e) => Produced::Ready(Err(e)),
            };
        }
        let auto = self.config.auto_create_partitions;
        if auto == 0 {
            return Produced::Ready(Err(EngineError::UnknownTopic(topic_name.to_string())));
        }
        // Only an implicit topic creation has to wait before appending.
        let this = Arc::clone(self);
        let topic_name = topic_name.to_string();
        Produced::Waiting(Box::pin(async move {
            let topic = this.ensure_topic(&topic_name, auto).await?;
            let staged = Staged::append(&topic, &records)?;
            staged.outcome().await
        }))
    }
}
