//! The [`Store`] trait: what the API and the workers ask of a database.
//!
//! What both guarantee (one shared test suite checks it against both):
//! - migrations are applied at open;
//! - sold ≤ tickets and a buyer's confirmed total ≤ max_per_buyer are CHECK constraints, so even
//!   a buggy caller cannot oversell;
//! - [`Store::decide_batch`] decides a whole batch in ONE transaction with the rules of
//!   [`crate::domain::Ledger`]; a purchase id is decided once, and a redelivered job reads back
//!   its decision;
//! - an event's waiting room is stored with it (its pacing included), and [`Store::seal_line`]
//!   records its line's pre-queue size once: the first call's size stands for good;
//! - [`Store::record_line_pace`] moves a line's admission curve on by compare-and-set: of
//!   several callers turning it from the same point, exactly one wins, and every caller (and
//!   every later [`Store::line_pace`]) reads the winner's point.
//!
//! A sharded store ([`super::ShardedStore`]) keeps this contract per event: an event and its
//! purchases live in one shard's database, so "one transaction per batch" becomes one per shard
//! the batch touches (see its module docs).

use std::future::Future;

use prometheus_client::registry::Registry;

use super::error::StoreError;
use crate::domain::{
    Decision, Event, EventId, EventSpec, LinePace, Position, Purchase, PurchaseId, PurchaseStatus,
    QueuedJob,
};

/// What [`Store::record_line_pace`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedPace {
    /// The point on record after the call.
    pub pace: LinePace,
    /// Whether this call recorded it.
    pub won: bool,
}

/// The ticket store. Every method is one transaction.
pub trait Store: Send + Sync + 'static {
    /// Creates an event with nothing sold.
    fn create_event(
        &self,
        spec: &EventSpec,
    ) -> impl Future<Output = Result<Event, StoreError>> + Send;

    /// An event, or `None` if there is no such id.
    fn event(&self, id: EventId) -> impl Future<Output = Result<Option<Event>, StoreError>> + Send;

    /// Records a queued purchase as pending, unless the purchase is already recorded (a worker
    /// may have decided it first, or an Idempotency-Key retry may repeat it), and returns the
    /// position on record: the first one the purchase was queued at.
    fn record_pending(
        &self,
        job: &QueuedJob,
    ) -> impl Future<Output = Result<Position, StoreError>> + Send;

    /// A purchase, or `None` if there is no such id.
    fn purchase(
        &self,
        id: PurchaseId,
    ) -> impl Future<Output = Result<Option<Purchase>, StoreError>> + Send;

    /// Decides a batch of jobs in one transaction (a sharded store: one per shard the batch
    /// touches; see the module docs); one decision per job, in the batch's order.
    fn decide_batch(
        &self,
        jobs: &[QueuedJob],
    ) -> impl Future<Output = Result<Vec<Decision>, StoreError>> + Send;

    /// The dead-letter path: marks a purchase `rejected: failed` unless it is already decided,
    /// and returns its final status.
    fn mark_failed(
        &self,
        job: &QueuedJob,
    ) -> impl Future<Output = Result<PurchaseStatus, StoreError>> + Send;

    /// Up to `limit` purchases of an event, by position (for checks and reports).
    fn event_purchases(
        &self,
        event: EventId,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Purchase>, StoreError>> + Send;

    /// Records the pre-queue size of an event's line the first time it is called and returns
    /// the size on record (the first caller's, whatever later callers pass): every API
    /// instance converges on one. One statement decides it (an `UPDATE` of a size still
    /// unset), so concurrent callers get the same answer; a sealed size is never changed. (A
    /// size past `i64::MAX` is stored as `i64::MAX`: no line is that long.)
    ///
    /// # Errors
    /// [`StoreError::NoSuchEvent`] when there is no such event, [`StoreError::NoWaitingRoom`]
    /// when it has no waiting room (from every store, a sharded one included: these are
    /// answers about the event, not a shard's failure); otherwise the database's error.
    fn seal_line(
        &self,
        event: EventId,
        size: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The latest point of `event`'s admission curve on record: `None` until one is recorded
    /// (the curve is then `LinePace::opening(opens_at, admit_per_s)`).
    ///
    /// # Errors
    /// [`StoreError::NoSuchEvent`] and [`StoreError::NoWaitingRoom`] as for
    /// [`Store::seal_line`]; otherwise the database's error.
    fn line_pace(
        &self,
        event: EventId,
    ) -> impl Future<Output = Result<Option<LinePace>, StoreError>> + Send;

    /// Records `next` as `event`'s latest point if the one on record is still `current`
    /// (`None`: none recorded yet) and returns the point on record afterwards: `next` when this
    /// call won, the winner's when another call changed it first, and which of the two
    /// happened (callers that raced with equal points all get `next`, and one of them won). A
    /// compare-and-set in one transaction, so of several API instances turning the curve at
    /// once exactly one point wins and all read it back. (An `admitted_milli` past `i64::MAX`
    /// is stored as `i64::MAX`.)
    ///
    /// # Errors
    /// [`StoreError::NoSuchEvent`] and [`StoreError::NoWaitingRoom`] as for
    /// [`Store::seal_line`]; [`StoreError::Corrupt`] when no point is on record afterwards
    /// (a `current` of `Some` for a line that never had one recorded); otherwise the
    /// database's error (a `next` out of range breaks a CHECK constraint).
    fn record_line_pace(
        &self,
        event: EventId,
        current: Option<LinePace>,
        next: LinePace,
    ) -> impl Future<Output = Result<RecordedPace, StoreError>> + Send;

    /// Ok when the database answers (readiness); a sharded store, when every shard does.
    fn check_ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The shard whose database holds an event: what the API stamps into the ids of the
    /// event's purchases ([`PurchaseId::on_shard`]). 0 for an unsharded store, and for an event
    /// id a sharded store does not know (which has no purchases to stamp). An event's shard
    /// never changes, so a caller may cache it once the event exists.
    fn shard_of(&self, event: EventId) -> impl Future<Output = Result<u8, StoreError>> + Send {
        let _ = event;
        std::future::ready(Ok(0))
    }

    /// Registers the store's own metrics in `registry`, if it has any (a sharded store's
    /// per-shard counters). The counters are shared, so registering in several registries is
    /// fine.
    fn register_metrics(&self, registry: &mut Registry) {
        let _ = registry;
    }

    /// Registers the metrics of the store's reading side in `registry`, if it has any (its
    /// read replicas'): the API's registry, since the API is what reads purchases.
    fn register_read_metrics(&self, registry: &mut Registry) {
        let _ = registry;
    }
}
