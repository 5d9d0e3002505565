//! The purchase worker: pull a batch, decide it in one store transaction, commit, then ack.
//!
//! Why this order is safe: the decision is committed before the ack, so a worker that dies
//! between the two only causes a redelivery, and the store reads the committed decision back
//! instead of selling again ([`crate::store::Store::decide_batch`]). The queue's ordered lane
//! hands an event's jobs to one worker at a time, in position order, so decisions are first
//! come, first served.
//!
//! Failures:
//! - a transient store error (busy, lost connection, timeout) is waited out in place, the batch
//!   tried again with a jittered exponential backoff for up to [`WorkerConfig::store_patience`];
//!   then the whole batch is nacked with the same backoff. A nack spends one of each job's
//!   delivery attempts, and the queue dead-letters a job after its last: nacked at once, a
//!   store restart of a second would have failed the purchases at the head of the line;
//!   marking a dead letter `failed` is retried the same way;
//! - any other store error decides the batch one job at a time, acks what succeeds and nacks
//!   only what fails (the jobs after it in its partition wait and come back with it, keeping
//!   the order), so one poison job cannot drag its batch-mates to the dead-letter lane;
//! - the queue dead-letters a job after its last attempt; the dead-letter loop here marks its
//!   purchase `rejected: failed` (unless it was decided after all), so nothing is silently lost.
//!
//! Shutdown: cancellation is only observed between batches, so a batch in progress is
//! committed and acked before [`Worker::run`] returns; a batch waiting out a store outage is given back
//! at once instead.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config_error::ConfigError;
use crate::domain::{Decision, PurchaseStatus, QueuedJob};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::queue::{Delivery, DeliveryTag, JobConsumer, Lane, PurchaseQueue};
use crate::store::{Store, StoreError};

/// Fetch failures in a row after which a worker drops its consumer and joins again.
pub const REJOIN_AFTER_FETCH_FAILURES: u32 = 3;

/// The default [`WorkerConfig::linger`], in milliseconds.
pub const DEFAULT_LINGER_MS: u64 = 20;

/// The default [`WorkerConfig::store_patience`], in seconds.
pub const DEFAULT_STORE_PATIENCE_S: u64 = 10;

/// The most `worker --store-patience-s` takes: with a store call's 10 s deadline
/// ([`WorkerConfig::store_timeout`]) a batch then stays within the broker queue's 30 s lease.
pub const MAX_STORE_PATIENCE_S: u64 = 15;
const _: () = assert!(DEFAULT_STORE_PATIENCE_S <= MAX_STORE_PATIENCE_S);

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The most jobs decided in one transaction.
    pub batch_max_jobs: usize,
    /// How long one fetch waits for a first job.
    pub fetch_wait: Duration,
    /// The longest one store call may take before it counts as a transient failure.
    pub store_timeout: Duration,
    /// How long a batch is tried again in place while the store fails transiently, before it
    /// is given back to the queue (which spends one delivery attempt of each job). Keep it plus
    /// `store_timeout` under the queue's lease, or the batch is redelivered to another worker
    /// meanwhile (harmless: decisions are read back, but the work is done twice). Zero nacks
    /// at the first failure.
    pub store_patience: Duration,
    /// The first retry delay; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// The longest retry delay.
    pub backoff_max: Duration,
    /// After deciding a batch smaller than `batch_max_jobs`, the pause before the next fetch, so
    /// the next batch is bigger: each batch costs one store commit (with its fsync) and one ack
    /// (with the broker's), whatever its size. Under a rush at 10,000 purchases/s, 20 ms lets a
    /// batch grow to ~200 jobs instead of the ~40 that arrived while the last one was decided.
    /// A purchase after a quiet spell waits for none of it: the worker is then parked in the
    /// fetch's long-poll, which returns the moment a job arrives. Zero turns it off.
    pub linger: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch_max_jobs: 256,
            fetch_wait: Duration::from_millis(500),
            store_timeout: Duration::from_secs(10),
            store_patience: Duration::from_secs(DEFAULT_STORE_PATIENCE_S),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            linger: Duration::from_millis(DEFAULT_LINGER_MS),
        }
    }
}

/// The most jobs one batch may hold (`WorkerConfig::batch_max_jobs`).
pub const MAX_BATCH_JOBS: usize = 10_000;

/// The longest `WorkerConfig::linger`.
pub const MAX_LINGER: Duration = Duration::from_secs(1);

impl WorkerConfig {
    /// Checks every setting's range.
    ///
    /// # Errors
    /// The first setting out of its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(
            (1..=MAX_BATCH_JOBS).contains(&self.batch_max_jobs),
            "WorkerConfig::batch_max_jobs",
            format!("must be 1 to {MAX_BATCH_JOBS}"),
        )?;
        ConfigError::check(
            !self.fetch_wait.is_zero(),
            "WorkerConfig::fetch_wait",
            "must be more than zero (a zero wait polls the queue in a loop)",
        )?;
        ConfigError::check(
            !self.store_timeout.is_zero(),
            "WorkerConfig::store_timeout",
            "must be more than zero",
        )?;
        ConfigError::check(
            self.store_patience <= Duration::from_secs(MAX_STORE_PATIENCE_S),
            "WorkerConfig::store_patience",
            format!("must be at most {MAX_STORE_PATIENCE_S} s, to stay within a job's lease"),
        )?;
        ConfigError::check(
            !self.backoff_base.is_zero() && self.backoff_base <= self.backoff_max,
            "WorkerConfig::backoff_base",
            "must be more than zero and at most backoff_max",
        )?;
        ConfigError::check(
            self.linger <= MAX_LINGER,
            "WorkerConfig::linger",
            format!("must be at most {MAX_LINGER:?}"),
        )
    }

    /// The delay before retry number `failures` (1-based): exponential, capped, with jitter in
    /// [½, 1] of the step so a crowd of workers does not retry in lockstep.
    pub fn backoff(&self, failures: u32) -> Duration {
        let step = self
            .backoff_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.backoff_max);
        let half = step / 2;
        half + step
            .saturating_sub(half)
            .mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// One worker: its store, queue, metrics and settings.
pub struct Worker<S, Q> {
    store: Arc<S>,
    queue: Arc<Q>,
    metrics: Arc<Metrics>,
    config: WorkerConfig,
    name: String,
}

enum Outcome {
    Done,
    Stopped,
}

impl<S: Store, Q: PurchaseQueue> Worker<S, Q> {
    /// A worker named `name` (logs, queue membership).
    pub fn new(
        store: Arc<S>,
        queue: Arc<Q>,
        metrics: Arc<Metrics>,
        config: WorkerConfig,
        name: impl Into<String>,
    ) -> Self {
        Self {
            store,
            queue,
            metrics,
            config,
            name: name.into(),
        }
    }

    /// Runs the deciding loop and the dead-letter loop until `shutdown` is cancelled. A queue
    /// that is down is waited for (with backoff), never a reason to stop.
    pub async fn run(&self, shutdown: CancellationToken) {
        tokio::join!(
            self.decide_loop(shutdown.clone()),
            self.dead_letter_loop(shutdown.clone())
        );
    }

    /// Joins the queue on `lane`, retrying with backoff; `None` once shut down.
    async fn join(&self, lane: Lane, shutdown: &CancellationToken) -> Option<Q::Consumer> {
        let mut failures = 0u32;
        loop {
            let joined = tokio::select! {
                () = shutdown.cancelled() => return None,
                r = self.queue.consumer(lane, &self.name) => r,
            };
            match joined {
                Ok(c) => return Some(c),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(worker = %self.name, ?lane, error = %e, "cannot join the queue; retrying");
                    if let Outcome::Stopped =
                        self.pause(self.config.backoff(failures), shutdown).await
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// After a failed fetch: waits, and after [`REJOIN_AFTER_FETCH_FAILURES`] in a row drops the
    /// consumer (its unacked jobs go back) and joins again. `None` once shut down.
    async fn recover(
        &self,
        lane: Lane,
        consumer: Q::Consumer,
        failures: u32,
        shutdown: &CancellationToken,
    ) -> Option<Q::Consumer> {
        if let Outcome::Stopped = self.pause(self.config.backoff(failures), shutdown).await {
            return None;
        }
        if failures.is_multiple_of(REJOIN_AFTER_FETCH_FAILURES) {
            drop(consumer);
            return self.join(lane, shutdown).await;
        }
        Some(consumer)
    }

    /// The next batch on `lane` (possibly empty), riding out fetch failures: backoff, and a
    /// rejoin after repeated ones. `None` once shut down.
    async fn next_batch(
        &self,
        lane: Lane,
        slot: &mut Option<Q::Consumer>,
        fetch_failures: &mut u32,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Delivery>> {
        loop {
            let consumer = slot.as_mut()?;
            let fetched = tokio::select! {
                () = shutdown.cancelled() => return None,
                r = consumer.fetch(self.config.batch_max_jobs, self.config.fetch_wait) => r,
            };
            match fetched {
                Ok(d) => {
                    *fetch_failures = 0;
                    return Some(d);
                }
                Err(e) => {
                    *fetch_failures = fetch_failures.saturating_add(1);
                    tracing::warn!(worker = %self.name, ?lane, error = %e, "fetch failed");
                    let old = slot.take()?;
                    *slot = Some(self.recover(lane, old, *fetch_failures, shutdown).await?);
                }
            }
        }
    }

    async fn pause(&self, delay: Duration, shutdown: &CancellationToken) -> Outcome {
        tokio::select! {
            () = shutdown.cancelled() => Outcome::Stopped,
            () = tokio::time::sleep(delay) => Outcome::Done,
        }
    }

    async fn decide_loop(&self, shutdown: CancellationToken) {
        let mut slot = self.join(Lane::Purchases, &shutdown).await;
        let mut failures = 0u32;
        let mut fetch_failures = 0u32;
        loop {
            let Some(deliveries) = self
                .next_batch(Lane::Purchases, &mut slot, &mut fetch_failures, &shutdown)
                .await
            else {
                return;
            };
            let Some(consumer) = slot.as_mut() else {
                return;
            };
            if deliveries.is_empty() {
                continue;
            }
            let small = deliveries.len() < self.config.batch_max_jobs;
            self.metrics.workers_busy.inc();
            let span = tracing::debug_span!("batch", worker = %self.name, jobs = deliveries.len());
            let ok = tracing::Instrument::instrument(
                self.decide(consumer, &deliveries, &mut failures, &shutdown),
                span,
            )
            .await;
            self.metrics.workers_busy.dec();
            let pause = if !ok {
                self.config.backoff(failures)
            } else if small {
                self.config.linger
            } else {
                continue;
            };
            if !pause.is_zero() && matches!(self.pause(pause, &shutdown).await, Outcome::Stopped) {
                return;
            }
        }
    }

    /// Decides `jobs`, trying again in place while the store fails transiently (see
    /// [`Self::patiently`]). The batch duration metric times the transaction that succeeded,
    /// not the wait before it.
    async fn decide_patiently(
        &self,
        jobs: &[QueuedJob],
        shutdown: &CancellationToken,
    ) -> Result<Vec<Decision>, StoreError> {
        self.patiently("decide a batch", shutdown, || async move {
            let started = Instant::now();
            let decided = self.decide_with_timeout(jobs).await;
            if decided.is_ok() {
                self.metrics
                    .batch_duration
                    .observe(started.elapsed().as_secs_f64());
            }
            decided
        })
        .await
    }

    /// Runs the store call `op`, and again with backoff while it fails transiently, for up to
    /// `store_patience` or until shutdown; returns the last outcome. The caller holds the
    /// deliveries' leases meanwhile, where a nack would spend a delivery attempt on an outage.
    /// The last try starts within the patience (a backoff is cut short to it), so a batch is
    /// given back at most `store_patience` + `store_timeout` after its first try.
    async fn patiently<T, F>(
        &self,
        what: &'static str,
        shutdown: &CancellationToken,
        mut op: impl FnMut() -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let first_try = Instant::now();
        let mut retries = 0u32;
        loop {
            let outcome = op().await;
            match &outcome {
                Err(e)
                    if e.is_transient()
                        && first_try.elapsed() < self.config.store_patience
                        && !shutdown.is_cancelled() =>
                {
                    retries = retries.saturating_add(1);
                    self.metrics.store_retries.inc();
                    tracing::warn!(worker = %self.name, error = %e, retries, "store unavailable; will {what} again");
                    let left = self
                        .config
                        .store_patience
                        .saturating_sub(first_try.elapsed());
                    if let Outcome::Stopped = self
                        .pause(self.config.backoff(retries).min(left), shutdown)
                        .await
                    {
                        return outcome;
                    }
                }
                _ => return outcome,
            }
        }
    }

    async fn decide_with_timeout(&self, jobs: &[QueuedJob]) -> Result<Vec<Decision>, StoreError> {
        let limit = self.config.store_timeout;
        tokio::time::timeout(limit, self.store.decide_batch(jobs))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable {
                    reason: format!("decide_batch took over {limit:?}"),
                })
            })
    }

    /// Decides one fetched batch and acks or nacks it. False when anything was nacked.
    async fn decide(
        &self,
        consumer: &mut Q::Consumer,
        deliveries: &[Delivery],
        failures: &mut u32,
        shutdown: &CancellationToken,
    ) -> bool {
        let jobs: Vec<QueuedJob> = deliveries.iter().map(|d| d.job.clone()).collect();
        let tags: Vec<DeliveryTag> = deliveries.iter().map(|d| d.tag).collect();
        match self.decide_patiently(&jobs, shutdown).await {
            Ok(decisions) => {
                self.metrics.batch_jobs.observe(jobs.len() as f64);
                self.count(&decisions);
                *failures = 0;
                self.ack(consumer, &tags).await;
                true
            }
            Err(e) if e.is_transient() || jobs.len() == 1 => {
                *failures = failures.saturating_add(1);
                tracing::warn!(worker = %self.name, error = %e, jobs = jobs.len(), "batch not decided; giving it back");
                self.nack(consumer, &tags, self.config.backoff(*failures))
                    .await;
                false
            }
            Err(e) => {
                tracing::warn!(worker = %self.name, error = %e, jobs = jobs.len(), "batch failed; deciding its jobs one by one");
                // Ordered lane: after a job fails, the rest of its partition must wait for it
                // (the nack redelivers them after it), so they are neither decided nor acked.
                let mut blocked = HashSet::new();
                for (job, tag) in jobs.iter().zip(&tags) {
                    if blocked.contains(&tag.partition) {
                        continue;
                    }
                    match self.decide_with_timeout(std::slice::from_ref(job)).await {
                        Ok(d) => {
                            self.count(&d);
                            self.ack(consumer, std::slice::from_ref(tag)).await;
                        }
                        Err(e) => {
                            blocked.insert(tag.partition);
                            *failures = failures.saturating_add(1);
                            tracing::warn!(worker = %self.name, error = %e, purchase_id = %job.job.purchase_id, "job not decided; giving it back");
                            self.nack(
                                consumer,
                                std::slice::from_ref(tag),
                                self.config.backoff(*failures),
                            )
                            .await;
                        }
                    }
                }
                blocked.is_empty()
            }
        }
    }

    fn count(&self, decisions: &[Decision]) {
        for d in decisions {
            let outcome = match (d.is_new, d.status) {
                (false, _) => "redelivered",
                (true, PurchaseStatus::Rejected(r)) => r.as_str(),
                (true, PurchaseStatus::Confirmed) => "confirmed",
                (true, PurchaseStatus::Pending) => "pending",
            };
            self.metrics
                .decisions
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
    }

    async fn ack(&self, consumer: &mut Q::Consumer, tags: &[DeliveryTag]) {
        if let Err(e) = consumer.ack(tags).await {
            // Decisions are committed: a redelivery will read them back.
            tracing::warn!(worker = %self.name, error = %e, "ack failed; the jobs will come back and be read back");
        }
    }

    async fn nack(&self, consumer: &mut Q::Consumer, tags: &[DeliveryTag], delay: Duration) {
        self.metrics.nacks.inc();
        if let Err(e) = consumer.nack(tags, delay).await {
            tracing::warn!(worker = %self.name, error = %e, "nack failed; the jobs come back when their lease ends");
        }
    }

    async fn dead_letter_loop(&self, shutdown: CancellationToken) {
        let mut slot = self.join(Lane::DeadLetters, &shutdown).await;
        let mut failures = 0u32;
        let mut fetch_failures = 0u32;
        loop {
            let Some(deliveries) = self
                .next_batch(Lane::DeadLetters, &mut slot, &mut fetch_failures, &shutdown)
                .await
            else {
                return;
            };
            let Some(consumer) = slot.as_mut() else {
                return;
            };
            for d in &deliveries {
                let limit = self.config.store_timeout;
                let marked = self
                    .patiently("mark a dead letter failed", &shutdown, || async move {
                        tokio::time::timeout(limit, self.store.mark_failed(&d.job))
                            .await
                            .unwrap_or_else(|_| {
                                Err(StoreError::Unavailable {
                                    reason: format!("mark_failed took over {limit:?}"),
                                })
                            })
                    })
                    .await;
                match marked {
                    Ok(status) => {
                        failures = 0;
                        self.metrics.dead_letters.inc();
                        tracing::warn!(
                            worker = %self.name,
                            purchase_id = %d.job.job.purchase_id,
                            reason = d.dead_letter_reason.as_deref().unwrap_or("unknown"),
                            status = status.as_str(),
                            "dead-lettered purchase"
                        );
                        self.ack(consumer, std::slice::from_ref(&d.tag)).await;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(worker = %self.name, error = %e, "could not mark a dead-lettered purchase failed");
                        self.nack(
                            consumer,
                            std::slice::from_ref(&d.tag),
                            self.config.backoff(failures),
                        )
                        .await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_validates_and_each_range_is_checked() {
        crate::testing::assert_each_refused(
            &WorkerConfig::default(),
            WorkerConfig::validate,
            &[
                ("WorkerConfig::batch_max_jobs", |c| c.batch_max_jobs = 0),
                ("WorkerConfig::batch_max_jobs", |c| {
                    c.batch_max_jobs = MAX_BATCH_JOBS + 1;
                }),
                ("WorkerConfig::fetch_wait", |c| {
                    c.fetch_wait = Duration::ZERO
                }),
                ("WorkerConfig::store_timeout", |c| {
                    c.store_timeout = Duration::ZERO
                }),
                ("WorkerConfig::store_patience", |c| {
                    c.store_patience = Duration::from_secs(MAX_STORE_PATIENCE_S + 1);
                }),
                ("WorkerConfig::backoff_base", |c| {
                    c.backoff_base = Duration::ZERO
                }),
                ("WorkerConfig::backoff_base", |c| {
                    c.backoff_base = c.backoff_max + Duration::from_millis(1);
                }),
                ("WorkerConfig::linger", |c| c.linger = MAX_LINGER * 2),
            ],
        );
    }

    #[test]
    fn the_longest_store_patience_keeps_a_batch_within_its_lease() {
        let lease = crate::queue::BrokerQueueConfig::new("unused").lease;
        let worst =
            Duration::from_secs(MAX_STORE_PATIENCE_S) + WorkerConfig::default().store_timeout;
        assert!(
            worst < lease,
            "{worst:?} of store patience and a last store call outlive the {lease:?} lease"
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let c = WorkerConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        for (n, step) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let d = c.backoff(n);
            let step = Duration::from_millis(step);
            assert!(
                d >= step / 2 && d <= step,
                "failure {n}: {d:?} not within [{:?}, {step:?}]",
                step / 2
            );
        }
    }
}
