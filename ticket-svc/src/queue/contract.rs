//! The queue's contract: [`PurchaseQueue`] (what the API enqueues on and the workers consume
//! from), [`JobConsumer`], and the values they pass.
//!
//! Contract every implementation keeps:
//! - `enqueue` returns only after the job is durable; the same purchase id enqueued again returns
//!   the first position with `is_duplicate = true` and appends nothing.
//! - Jobs of one event share a partition, so their positions order them by arrival.
//! - `Lane::Purchases` is ordered: while a consumer holds unacked jobs of a partition no other
//!   consumer gets jobs of that partition, and jobs are delivered in offset order. A nack
//!   redelivers the nacked job and everything after it in its partition, after the delay; only
//!   the nacked job is charged an attempt. Dropping a consumer (a dead worker) makes its unacked
//!   jobs deliverable to others. An ack of a job once handed out counts even if the job was
//!   taken back since: the work was done.
//! - A job nacked on its last allowed attempt moves to `Lane::DeadLetters`, keeping its original
//!   position, with a reason; the jobs delivered after it come back at once, uncharged.
//! - A payload that cannot be decoded is the implementation's to dead-letter and log; consumers
//!   only ever see decoded jobs.
//!
//! `tests/it/queue_contract.rs` runs one suite of these rules on both implementations.

use std::future::Future;
use std::time::Duration;

use super::error::QueueError;
use crate::domain::{Position, PurchaseJob, QueuedJob};

/// Which stream a consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Purchase jobs, in order of arrival per event.
    Purchases,
    /// Jobs that ran out of attempts.
    DeadLetters,
}

/// The answer to an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's place in its event's line.
    pub position: Position,
    /// True when this purchase id was already queued (nothing was appended).
    pub is_duplicate: bool,
}

/// How much the workers have left and have done, as the queue last knew it: what the
/// supervisor scales by and an automatic waiting room paces by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Purchases queued and not decided yet, over every partition (the workers' group lag).
    pub queued: u64,
    /// Partitions with at least one of them: the most workers that can help.
    pub busy_partitions: usize,
    /// Purchases decided ever (acknowledged by the workers): its rate of change is how fast
    /// the workers decide.
    pub decided: u64,
}

/// Names one delivery, for ack and nack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryTag {
    /// The partition it came from.
    pub partition: u32,
    /// Its offset in that partition (of the lane it was fetched from).
    pub offset: u64,
}

/// One job handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// What to ack or nack.
    pub tag: DeliveryTag,
    /// The job and its position in the purchases line (for a dead letter: the original one).
    pub job: QueuedJob,
    /// 1 on the first delivery, 2 on the first redelivery, …
    pub attempt: u32,
    /// For `Lane::DeadLetters`: why it was dead-lettered.
    pub dead_letter_reason: Option<String>,
}

/// The queue as the API and the workers use it.
pub trait PurchaseQueue: Send + Sync + 'static {
    /// What [`PurchaseQueue::consumer`] opens.
    type Consumer: JobConsumer;

    /// Durably queues a job (key = event id, dedup id = purchase id) and returns its position.
    fn enqueue(
        &self,
        job: &PurchaseJob,
    ) -> impl Future<Output = Result<Enqueued, QueueError>> + Send;

    /// Opens a consumer on a lane; `name` identifies it (logs, broker group membership).
    fn consumer(
        &self,
        lane: Lane,
        name: &str,
    ) -> impl Future<Output = Result<Self::Consumer, QueueError>> + Send;

    /// Ok when the queue can take jobs now (for readiness).
    fn check_ready(&self) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// The workers' [`Backlog`] on the purchases lane, or `None` when the queue cannot tell now.
    fn backlog(&self) -> impl Future<Output = Option<Backlog>> + Send;
}

/// A member of the workers' consumer group on one lane. Dropping it gives its unacked jobs back.
pub trait JobConsumer: Send + 'static {
    /// Up to `max_jobs` deliveries, waiting up to `wait` for the first one; empty when none came.
    fn fetch(
        &mut self,
        max_jobs: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Delivery>, QueueError>> + Send;

    /// Done with these: they are never delivered again.
    fn ack(&mut self, tags: &[DeliveryTag]) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Not done: deliver again after `delay` (or dead-letter on the last attempt).
    fn nack(
        &mut self,
        tags: &[DeliveryTag],
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}
