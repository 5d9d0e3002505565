//! Pending purchases held in memory until a worker decides them (SQLite, one process).
//!
//! Under a rush the API's pending row was the SQLite writer's biggest job: one small commit per
//! few purchases, each rewriting the table's and the indexes' last pages into the WAL, and a
//! hand-off to the writer thread and back for every purchase. Yet a worker decides a purchase
//! tens of milliseconds later and writes the row anyway. So a store opened with
//! [`PendingRows::InMemory`] keeps the pending rows here:
//!
//! - a decision or a dead letter, once committed, removes its purchase from here;
//! - what is still here after [`FLUSH_AFTER`] is written to SQLite as a pending row, many in one
//!   commit, and then removed (so a worker that is down or far behind costs one write per
//!   purchase, as before, and memory stays bounded); `SqliteStore::write_held_rows` does that,
//!   and writes everything still held when it is stopped;
//! - at most [`MAX_HELD`] are held; beyond that a pending row is written at once.
//!
//! An id minted for one request ([`PurchaseId::is_minted`]) cannot be on record already. One
//! derived from an Idempotency-Key may have been recorded long ago (a key retried after the
//! queue's dedup window), and the API must answer with that first position. [`OnRecord`], a
//! Bloom filter of every purchase id on record, answers "certainly not" for nearly all of them;
//! only a "maybe" is looked up in SQLite (on the writer thread, whose page cache is warm) before
//! the row is held. Looking every one up cost a trip to the writer thread per purchase, which
//! under a rush was as dear as the write it replaced.
//!
//! Why reads stay right: a writer commits a purchase's row before it removes it from here. So a
//! reader asks SQLite, then this buffer, then SQLite once more: a purchase decided between the
//! first two looks is in SQLite by the third.
//!
//! The rows live in this process only, so every API reading the database must share it: `up`
//! opens its store this way; `ticket-svc api` on SQLite (possibly one of several processes)
//! writes its pending rows at once. A crash loses what is held here and nothing else: the jobs
//! are in the queue, and `GET /purchases/{id}` answers 404 until a worker decides them.

use foldhash::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fastbloom::AtomicBloomFilter;

use crate::domain::{EventId, Position, Purchase, PurchaseId, PurchaseStatus, QueuedJob};

/// Held this long without a decision, a pending row is written to SQLite.
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// How often the buffer is checked for rows held longer than [`FLUSH_AFTER`].
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// The most pending rows held; beyond, they are written at once.
pub const MAX_HELD: usize = 100_000;

/// [`OnRecord`] is sized for at least this many purchase ids (and twice those on record at open).
pub const ON_RECORD_CAPACITY: usize = 4 << 20;
/// [`OnRecord`]'s false-positive rate within its capacity: the share of purchase ids from an
/// Idempotency-Key that are looked up in SQLite for nothing.
const ON_RECORD_FALSE_POSITIVES: f64 = 0.01;

/// Where a SQLite store keeps the pending rows of purchases no worker has decided yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingRows {
    /// Written to SQLite before the API answers (any number of processes may share the file).
    Written,
    /// Held in this process until decided or 1 s old (`FLUSH_AFTER`; see the module's docs):
    /// only for a process that holds every API reading the database.
    InMemory,
}

#[derive(Debug)]
struct Held {
    job: QueuedJob,
    since: Instant,
}

/// The pending rows held in memory, by purchase id.
#[derive(Debug, Default)]
pub(super) struct PendingBuffer {
    held: Mutex<HashMap<PurchaseId, Held>>,
}

impl PendingBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PurchaseId, Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds `job`'s pending row: its position (the one held already, for an id held twice).
    /// `None` when full: write the row instead.
    pub(super) fn hold(&self, job: &QueuedJob) -> Option<Position> {
        let mut held = self.lock();
        if let Some(h) = held.get(&job.job.purchase_id) {
            return Some(h.job.position);
        }
        if held.len() >= MAX_HELD {
            return None;
        }
        held.insert(
            job.job.purchase_id,
            Held {
                job: job.clone(),
                since: Instant::now(),
            },
        );
        Some(job.position)
    }

    /// The purchase, pending, if held.
    pub(super) fn get(&self, id: PurchaseId) -> Option<Purchase> {
        self.lock()
            .get(&id)
            .map(|h| h.job.to_purchase(PurchaseStatus::Pending))
    }

    /// Every held purchase of `event`, pending.
    pub(super) fn of_event(&self, event: EventId) -> Vec<Purchase> {
        self.lock()
            .values()
            .filter(|h| h.job.job.event_id == event)
            .map(|h| h.job.to_purchase(PurchaseStatus::Pending))
            .collect()
    }

    /// Forgets `ids`: call only after their rows are committed.
    pub(super) fn release(&self, ids: impl IntoIterator<Item = PurchaseId>) {
        let mut held = self.lock();
        for id in ids {
            held.remove(&id);
        }
    }

    /// The jobs held since before `now - age` (all of them for a zero age).
    pub(super) fn older_than(&self, age: Duration, now: Instant) -> Vec<QueuedJob> {
        self.lock()
            .values()
            .filter(|h| now.saturating_duration_since(h.since) >= age)
            .map(|h| h.job.clone())
            .collect()
    }

    /// How many are held.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The purchase ids on record, as a Bloom filter: `false` from [`OnRecord::may_hold`] is
/// certain; `true` may be wrong (1% within capacity, more beyond it: then more lookups, never a
/// wrong answer). Every id on record at open is in it, and the store adds each id it commits a
/// row for, after the commit.
#[derive(Debug)]
pub(super) struct OnRecord {
    ids: AtomicBloomFilter,
}

impl OnRecord {
    /// An empty filter for a database with `on_record` purchases (note them next).
    pub(super) fn new(on_record: usize) -> Self {
        Self {
            ids: AtomicBloomFilter::with_false_pos(ON_RECORD_FALSE_POSITIVES)
                .expected_items(ON_RECORD_CAPACITY.max(on_record.saturating_mul(2))),
        }
    }

    /// Whether `id` may be on record (`false`: certainly not).
    pub(super) fn may_hold(&self, id: PurchaseId) -> bool {
        self.ids.contains(&id)
    }

    /// Notes ids whose rows were just committed.
    pub(super) fn note(&self, ids: impl IntoIterator<Item = PurchaseId>) {
        for id in ids {
            self.ids.insert(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(event: i64, position: u64) -> QueuedJob {
        crate::testing::queued(EventId(event), "ann", 2, position)
    }

    #[test]
    fn an_id_held_twice_keeps_its_first_position() {
        let b = PendingBuffer::default();
        let first = job(1, 7);
        assert_eq!(b.hold(&first), Some(Position(7)));
        let again = QueuedJob {
            position: Position(9),
            ..first.clone()
        };
        assert_eq!(b.hold(&again), Some(Position(7)));
        let p = b.get(first.job.purchase_id).unwrap();
        assert_eq!(p.status, PurchaseStatus::Pending);
        assert_eq!((p.position, p.quantity), (Position(7), 2));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn released_ids_are_gone_and_events_are_kept_apart() {
        let b = PendingBuffer::default();
        let (x, y, z) = (job(1, 0), job(1, 1), job(2, 0));
        for j in [&x, &y, &z] {
            b.hold(j).unwrap();
        }
        let mut of_1: Vec<_> = b.of_event(EventId(1)).iter().map(|p| p.position).collect();
        of_1.sort();
        assert_eq!(of_1, vec![Position(0), Position(1)]);
        b.release([x.job.purchase_id, z.job.purchase_id]);
        assert!(b.get(x.job.purchase_id).is_none());
        assert!(b.get(y.job.purchase_id).is_some());
        assert!(b.of_event(EventId(2)).is_empty());
    }

    #[test]
    fn only_rows_held_long_enough_are_due() {
        let b = PendingBuffer::default();
        let j = job(1, 0);
        b.hold(&j).unwrap();
        let now = Instant::now();
        assert!(b.older_than(Duration::from_secs(60), now).is_empty());
        let later = now + Duration::from_secs(61);
        assert_eq!(
            b.older_than(Duration::from_secs(60), later),
            vec![j.clone()]
        );
        assert_eq!(b.older_than(Duration::ZERO, now), vec![j]);
    }

    #[test]
    fn on_record_never_misses_a_noted_id() {
        let at_open: Vec<PurchaseId> = (0..1000).map(|_| PurchaseId::new()).collect();
        let f = OnRecord::new(at_open.len());
        f.note(at_open.iter().copied());
        let later: Vec<PurchaseId> = (0..1000).map(|_| PurchaseId::new()).collect();
        f.note(later.iter().copied());
        assert!(at_open.iter().chain(&later).all(|id| f.may_hold(*id)));
        let strangers = (0..10_000)
            .filter(|_| f.may_hold(PurchaseId::new()))
            .count();
        assert!(
            strangers < 200,
            "{strangers} of 10,000 unknown ids may be held"
        );
    }

    #[test]
    fn a_full_buffer_refuses() {
        let b = PendingBuffer::default();
        {
            let mut held = b.lock();
            for i in 0..MAX_HELD {
                let j = job(1, i as u64);
                held.insert(
                    j.job.purchase_id,
                    Held {
                        job: j,
                        since: Instant::now(),
                    },
                );
            }
        }
        assert_eq!(b.hold(&job(1, 0)), None);
    }
}
