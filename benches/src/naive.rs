//! The naive baseline of the stack comparison: no queue, one database transaction per request.
//!
//! [`NaiveQueue`] implements ticket-svc's [`PurchaseQueue`] so the same axum router serves the
//! same HTTP contract (and the same `ticket-svc rush --verify` checks it), but its `enqueue`
//! does not queue: it decides the purchase at once in the store ([`AnyStore::sell_now`]: one
//! transaction that takes the next position in the event's line and decides with the same rules
//! and code the workers use). The purchase is final when the 202 is sent; its position is the
//! order the database serialized the sales in, as the broker offset is for the queue.
//!
//! It is a comparison baseline, not a product feature: it lives here, beside the benchmarks.

use std::sync::Arc;
use std::time::Duration;

use ticket_svc::domain::PurchaseJob;
use ticket_svc::queue::{
    Backlog, Delivery, DeliveryTag, Enqueued, JobConsumer, Lane, PurchaseQueue, QueueError,
};
use ticket_svc::store::{AnyStore, Store};

/// A [`PurchaseQueue`] that sells in the request's own transaction instead of queueing.
#[derive(Debug, Clone)]
pub struct NaiveQueue {
    store: Arc<AnyStore>,
}

impl NaiveQueue {
    /// Sells through `store` (the same store the API reads).
    pub fn new(store: Arc<AnyStore>) -> Self {
        Self { store }
    }
}

/// The consumer of a queue that holds nothing: every call says there is no queue.
#[derive(Debug)]
pub struct NoConsumer;

fn no_queue() -> QueueError {
    QueueError::Unavailable {
        reason: "the naive design decides in the request; it has no queue to consume".into(),
    }
}

impl PurchaseQueue for NaiveQueue {
    type Consumer = NoConsumer;

    async fn enqueue(&self, job: &PurchaseJob) -> Result<Enqueued, QueueError> {
        let (position, decision) =
            self.store
                .sell_now(job)
                .await
                .map_err(|e| QueueError::Unavailable {
                    reason: e.to_string(),
                })?;
        Ok(Enqueued {
            position,
            is_duplicate: !decision.is_new,
        })
    }

    async fn consumer(&self, _lane: Lane, _name: &str) -> Result<NoConsumer, QueueError> {
        Err(no_queue())
    }

    /// Nothing waits: every purchase is decided in its request.
    async fn backlog(&self) -> Option<Backlog> {
        None
    }

    async fn check_ready(&self) -> Result<(), QueueError> {
        self.store
            .check_ready()
            .await
            .map_err(|e| QueueError::Unavailable {
                reason: e.to_string(),
            })
    }
}

impl JobConsumer for NoConsumer {
    async fn fetch(
        &mut self,
        _max_jobs: usize,
        _wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        Err(no_queue())
    }

    async fn ack(&mut self, _tags: &[DeliveryTag]) -> Result<(), QueueError> {
        Err(no_queue())
    }

    async fn nack(&mut self, _tags: &[DeliveryTag], _delay: Duration) -> Result<(), QueueError> {
        Err(no_queue())
    }
}
