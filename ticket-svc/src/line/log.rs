//! The line log: where an event's joins get their sequence, one shared, durable, ordered record
//! per join. [`LineLog`] is what the API asks of it; [`MemoryLineLog`] keeps it in memory (tests,
//! and `up` with the in-memory queue), `BrokerLineLog` in the broker.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::access::BuyerId;
use crate::domain::EventId;
use crate::queue::QueueError;

/// What a line log call returns.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, QueueError>> + Send + 'a>>;

/// An event's line, as an append-only log.
///
/// Contract (both implementations): an event's records are numbered 0, 1, 2, ... in the order
/// they were appended, and only joins and seals are appended; a visitor's join (and the seal)
/// appended again while the log still remembers the first (the broker: its dedup window, ten
/// minutes) answers the first one's sequence and appends nothing; an answer means the record
/// is durable.
pub trait LineLog: Send + Sync + 'static {
    /// Appends `visitor`'s join to `event`'s line (at `at_ms`, Unix milliseconds); its sequence.
    fn join<'a>(&'a self, event: EventId, visitor: &'a BuyerId, at_ms: i64) -> LogFuture<'a, u64>;

    /// Appends the seal that opens `event`'s line; its sequence, the pre-queue's size.
    fn seal(&self, event: EventId) -> LogFuture<'_, u64>;
}

/// One event's records in memory.
#[derive(Debug, Default)]
struct Records {
    appended: u64,
    /// The sequence of each dedup id seen (visitors' joins, the seal).
    seen: HashMap<String, u64>,
}

/// A [`LineLog`] in memory: durable for the life of the process only. It never forgets a
/// visitor (no dedup window).
#[derive(Debug, Default)]
pub struct MemoryLineLog {
    events: Mutex<HashMap<EventId, Records>>,
}

impl MemoryLineLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn append(&self, event: EventId, dedup_id: String) -> u64 {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let records = events.entry(event).or_default();
        let next = records.appended;
        let seq = *records.seen.entry(dedup_id).or_insert(next);
        if seq == next {
            records.appended += 1;
        }
        seq
    }

    /// Records appended to `event`'s line so far.
    pub fn len(&self, event: EventId) -> u64 {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&event)
            .map_or(0, |r| r.appended)
    }
}

/// The dedup id of a visitor's join.
pub(super) fn join_id(visitor: &BuyerId) -> String {
    format!("join/{visitor}")
}

/// The dedup id of the seal.
pub(super) const SEAL_ID: &str = "seal";

impl LineLog for MemoryLineLog {
    fn join<'a>(&'a self, event: EventId, visitor: &'a BuyerId, _at_ms: i64) -> LogFuture<'a, u64> {
        let seq = self.append(event, join_id(visitor));
        Box::pin(std::future::ready(Ok(seq)))
    }

    fn seal(&self, event: EventId) -> LogFuture<'_, u64> {
        let seq = self.append(event, SEAL_ID.to_owned());
        Box::pin(std::future::ready(Ok(seq)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Email;

    fn visitor(name: &str) -> BuyerId {
        BuyerId::of(&Email::parse(&format!("{name}@example.org")).unwrap())
    }

    #[tokio::test]
    async fn joins_are_numbered_in_order_and_a_repeat_keeps_its_number() {
        let log = MemoryLineLog::new();
        let e = EventId(1);
        assert_eq!(log.join(e, &visitor("a"), 0).await.unwrap(), 0);
        assert_eq!(log.join(e, &visitor("b"), 0).await.unwrap(), 1);
        assert_eq!(log.join(e, &visitor("a"), 0).await.unwrap(), 0);
        assert_eq!(log.seal(e).await.unwrap(), 2);
        assert_eq!(log.seal(e).await.unwrap(), 2, "sealed once");
        assert_eq!(log.join(e, &visitor("c"), 0).await.unwrap(), 3);
        assert_eq!(
            log.join(EventId(2), &visitor("c"), 0).await.unwrap(),
            0,
            "per event"
        );
        assert_eq!(log.len(e), 4);
    }
}
