//! The worker supervisor: scales the workers of `ticket-svc up` by the queue's length.
//!
//! Every `every` it reads the workers' group lag from the broker (records queued and not yet
//! decided) and how many partitions it is spread over. When the lag stays above
//! `scale_up_lag` for `sustain` checks in a row it starts one more worker (up to `max`); when it
//! stays at or below `scale_down_lag` it stops one (down to `min`), which first finishes the
//! batch it is in. One step per decision, with hysteresis, so a burst does not make it flap.
//!
//! It never runs more workers than there are partitions with a lag. The group is ordered: a
//! partition is worked by one worker at a time, in order. An event's purchases all go to one
//! partition, so a rush on one event is worked by one worker, however many run. A worker more
//! than the busy partitions would only long-poll and wake at every append.
//!
//! The lag, the busy partitions and the worker count are exported (`ticket_supervisor_lag`,
//! `ticket_supervisor_busy_partitions`, `ticket_supervisor_workers`) so an external autoscaler
//! can follow the same signal (the broker's own `broker_group_lag` is the lag per partition).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use ticket_svc::config_error::ConfigError;
use ticket_svc::metrics::Metrics;
use ticket_svc::queue::{PurchaseQueue, backlog_of};
use ticket_svc::store::Store;
use ticket_svc::worker::{Worker, WorkerConfig};

/// When to add and remove workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingConfig {
    /// Workers always running.
    pub min: usize,
    /// Workers at most.
    pub max: usize,
    /// Lag above which to add a worker.
    pub scale_up_lag: u64,
    /// Lag at or below which to remove one.
    pub scale_down_lag: u64,
    /// Consecutive checks past a threshold before acting.
    pub sustain: u32,
    /// Time between checks.
    pub every: Duration,
}

impl ScalingConfig {
    /// `min` to `max` workers; add above 1,000 queued, remove at 50 or fewer, after 3 checks of
    /// 1 s.
    pub fn new(min: usize, max: usize) -> Self {
        Self {
            min: min.max(1),
            max: max.max(min.max(1)),
            scale_up_lag: 1000,
            scale_down_lag: 50,
            sustain: 3,
            every: Duration::from_secs(1),
        }
    }
}

impl ScalingConfig {
    /// Checks every setting's range.
    ///
    /// # Errors
    /// The first setting out of its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(self.min > 0, "ScalingConfig::min", "must be at least 1")?;
        ConfigError::check(
            self.max >= self.min,
            "ScalingConfig::max",
            "must be at least min",
        )?;
        ConfigError::check(
            self.scale_down_lag <= self.scale_up_lag,
            "ScalingConfig::scale_down_lag",
            "must be at most scale_up_lag, or one lag both adds and removes a worker",
        )?;
        ConfigError::check(
            self.sustain > 0,
            "ScalingConfig::sustain",
            "must be at least 1",
        )?;
        ConfigError::check(
            !self.every.is_zero(),
            "ScalingConfig::every",
            "must be more than zero",
        )
    }
}

/// What one check read: the group's lag and how many partitions it is spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lag {
    /// Records queued and not yet done, over every partition.
    pub queued: u64,
    /// Partitions with at least one such record.
    pub busy_partitions: usize,
}

/// What to do after one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start a worker.
    Up,
    /// Stop a worker.
    Down,
    /// Nothing.
    Hold,
}

/// The hysteresis state: how many checks in a row were above or below the thresholds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scaler {
    above: u32,
    below: u32,
}

impl Scaler {
    /// Decides from the observed `lag` with `running` workers. Pure: no clock, no I/O.
    pub fn decide(&mut self, config: &ScalingConfig, observed: Lag, running: usize) -> Step {
        self.decide_load(config, observed.queued, observed.busy_partitions, running)
    }

    /// Decides from any load measured against `config`'s thresholds (queued purchases for
    /// workers; requests in flight per API for `up --cluster`'s APIs), never adding past
    /// `useful` instances (the busy partitions for workers). Pure: no clock, no I/O.
    pub fn decide_load(
        &mut self,
        config: &ScalingConfig,
        lag: u64,
        useful: usize,
        running: usize,
    ) -> Step {
        if running < config.min {
            return Step::Up;
        }
        if running > config.max {
            return Step::Down;
        }
        if lag > config.scale_up_lag {
            self.above += 1;
            self.below = 0;
        } else if lag <= config.scale_down_lag {
            self.below += 1;
            self.above = 0;
        } else {
            self.above = 0;
            self.below = 0;
        }
        // A worker beyond the busy partitions would find nothing to do (see the module docs);
        // the count of checks stays, so more busy partitions scale up at the next check.
        if self.above >= config.sustain && running < config.max && running < useful {
            self.above = 0;
            Step::Up
        } else if self.below >= config.sustain && running > config.min {
            self.below = 0;
            Step::Down
        } else {
            Step::Hold
        }
    }
}

/// Reads the workers' group lag; `None` when the broker cannot say.
pub async fn group_lag(client: &broker::client::Client, topic: &str, group: &str) -> Option<Lag> {
    let stats = client.stats(topic).await.ok()?;
    backlog_of(&stats, topic, group).map(|b| Lag {
        queued: b.queued,
        busy_partitions: b.busy_partitions,
    })
}

/// Gauges the supervisor exports.
#[derive(Debug, Clone, Default)]
pub struct SupervisorMetrics {
    /// `ticket_supervisor_workers`.
    pub workers: Gauge,
    /// `ticket_supervisor_lag`.
    pub lag: Gauge,
    /// `ticket_supervisor_busy_partitions`.
    pub busy_partitions: Gauge,
}

impl SupervisorMetrics {
    /// Registers the gauges.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ticket_supervisor_workers",
            "Workers the supervisor is running",
            m.workers.clone(),
        );
        registry.register(
            "ticket_supervisor_lag",
            "Purchases queued and not yet decided, as the supervisor last read it",
            m.lag.clone(),
        );
        registry.register(
            "ticket_supervisor_busy_partitions",
            "Partitions with purchases queued, as the supervisor last read it: the most workers that can help",
            m.busy_partitions.clone(),
        );
        m
    }
}

/// Runs workers between `config.min` and `config.max`, scaling by the lag that `lag` reports,
/// until `shutdown`; then stops every worker (each finishing its batch) and returns.
#[allow(clippy::too_many_arguments)]
pub async fn supervise<S: Store, Q: PurchaseQueue, F, Fut>(
    store: Arc<S>,
    queue: Arc<Q>,
    metrics: Arc<Metrics>,
    gauges: SupervisorMetrics,
    worker_config: WorkerConfig,
    config: ScalingConfig,
    lag: F,
    shutdown: CancellationToken,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Lag>>,
{
    let mut running: Vec<(CancellationToken, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut scaler = Scaler::default();
    let mut started = 0usize;
    let mut start = |running: &mut Vec<_>| {
        let token = shutdown.child_token();
        let w = Worker::new(
            Arc::clone(&store),
            Arc::clone(&queue),
            Arc::clone(&metrics),
            worker_config.clone(),
            format!("worker-{started}"),
        );
        started += 1;
        let t = token.clone();
        running.push((token, tokio::spawn(async move { w.run(t).await })));
    };
    for _ in 0..config.min {
        start(&mut running);
    }
    gauges
        .workers
        .set(i64::try_from(running.len()).unwrap_or(i64::MAX));
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.every) => {}
            () = shutdown.cancelled() => break,
        }
        let Some(observed) = lag().await else {
            tracing::warn!("supervisor: cannot read the queue lag; holding");
            continue;
        };
        gauges
            .lag
            .set(i64::try_from(observed.queued).unwrap_or(i64::MAX));
        gauges
            .busy_partitions
            .set(i64::try_from(observed.busy_partitions).unwrap_or(i64::MAX));
        match scaler.decide(&config, observed, running.len()) {
            Step::Up => {
                start(&mut running);
                tracing::info!(
                    lag = observed.queued,
                    busy_partitions = observed.busy_partitions,
                    workers = running.len(),
                    "supervisor: added a worker"
                );
            }
            Step::Down => {
                if let Some((token, handle)) = running.pop() {
                    token.cancel();
                    if handle.await.is_err() {
                        tracing::error!("a worker task ended abnormally");
                    }
                    tracing::info!(
                        lag = observed.queued,
                        workers = running.len(),
                        "supervisor: removed a worker"
                    );
                }
            }
            Step::Hold => {}
        }
        gauges
            .workers
            .set(i64::try_from(running.len()).unwrap_or(i64::MAX));
    }
    for (token, _) in &running {
        token.cancel();
    }
    for (_, handle) in running {
        if handle.await.is_err() {
            tracing::error!("a worker task ended abnormally");
        }
    }
    gauges.workers.set(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate_and_each_range_is_checked() {
        ticket_svc::testing::assert_each_refused(
            &ScalingConfig::new(2, 8),
            ScalingConfig::validate,
            &[
                ("ScalingConfig::min", |c| c.min = 0),
                ("ScalingConfig::max", |c| c.max = 1),
                ("ScalingConfig::scale_down_lag", |c| c.scale_down_lag = 5000),
                ("ScalingConfig::sustain", |c| c.sustain = 0),
                ("ScalingConfig::every", |c| c.every = Duration::ZERO),
            ],
        );
    }

    /// A lag spread over more partitions than any test runs workers.
    fn lag(queued: u64) -> Lag {
        Lag {
            queued,
            busy_partitions: 8,
        }
    }

    fn cfg() -> ScalingConfig {
        ScalingConfig {
            min: 1,
            max: 3,
            scale_up_lag: 100,
            scale_down_lag: 10,
            sustain: 2,
            every: Duration::from_millis(10),
        }
    }

    #[test]
    fn scales_up_only_after_sustained_lag_and_not_past_max() {
        let c = cfg();
        let mut s = Scaler::default();
        assert_eq!(
            s.decide(&c, lag(500), 1),
            Step::Hold,
            "one check is not enough"
        );
        assert_eq!(s.decide(&c, lag(500), 1), Step::Up);
        assert_eq!(s.decide(&c, lag(500), 2), Step::Hold);
        assert_eq!(s.decide(&c, lag(500), 2), Step::Up);
        assert_eq!(s.decide(&c, lag(500), 3), Step::Hold);
        assert_eq!(s.decide(&c, lag(500), 3), Step::Hold, "at max");
    }

    #[test]
    fn scales_down_when_drained_but_not_below_min_and_a_middle_lag_resets() {
        let c = cfg();
        let mut s = Scaler::default();
        assert_eq!(s.decide(&c, lag(0), 3), Step::Hold);
        assert_eq!(
            s.decide(&c, lag(50), 3),
            Step::Hold,
            "between thresholds: reset"
        );
        assert_eq!(s.decide(&c, lag(0), 3), Step::Hold);
        assert_eq!(s.decide(&c, lag(0), 3), Step::Down);
        assert_eq!(s.decide(&c, lag(0), 2), Step::Hold);
        assert_eq!(s.decide(&c, lag(0), 2), Step::Down);
        assert_eq!(s.decide(&c, lag(0), 1), Step::Hold);
        assert_eq!(s.decide(&c, lag(0), 1), Step::Hold, "at min");
    }

    #[test]
    fn never_more_workers_than_busy_partitions() {
        let c = cfg();
        let mut s = Scaler::default();
        let one = Lag {
            queued: 500,
            busy_partitions: 1,
        };
        for _ in 0..10 {
            assert_eq!(
                s.decide(&c, one, 1),
                Step::Hold,
                "one partition is worked by one worker, however long its queue"
            );
        }
        let two = Lag {
            queued: 500,
            busy_partitions: 2,
        };
        assert_eq!(
            s.decide(&c, two, 1),
            Step::Up,
            "the sustained lag still counts once a second partition is busy"
        );
        assert_eq!(s.decide(&c, two, 2), Step::Hold);
        assert_eq!(s.decide(&c, two, 2), Step::Hold, "two busy, two workers");
        assert_eq!(s.decide(&c, lag(0), 2), Step::Hold);
        assert_eq!(
            s.decide(&c, lag(0), 2),
            Step::Down,
            "draining scales down as before"
        );
    }

    #[tokio::test]
    async fn group_lag_reads_the_lag_and_its_partitions_from_the_broker() {
        use broker::client::Consumer;
        use broker::protocol::{FetchMode, Record};
        let test_broker = broker::testing::TestBroker::start().await;
        let client = test_broker.client().await.unwrap();
        client.create_topic("jobs", 4).await.unwrap();
        // The group exists from its first fetch on.
        let consumer =
            Consumer::new(client.clone(), "jobs", "g", FetchMode::Ordered).wait(Duration::ZERO);
        assert!(consumer.fetch().await.unwrap().is_empty());
        assert_eq!(
            group_lag(&client, "jobs", "g").await,
            Some(Lag::default()),
            "nothing queued"
        );
        let keyed = |key: &str| Record {
            key: Some(bytes::Bytes::copy_from_slice(key.as_bytes())),
            ..Record::new("job")
        };
        let mut partitions = std::collections::BTreeSet::new();
        for _ in 0..3 {
            partitions.insert(
                client
                    .produce("jobs", keyed("event-1"))
                    .await
                    .unwrap()
                    .partition,
            );
        }
        assert_eq!(
            group_lag(&client, "jobs", "g").await,
            Some(Lag {
                queued: 3,
                busy_partitions: 1
            }),
            "one key, one partition"
        );
        for i in 2..=20 {
            let key = format!("event-{i}");
            partitions.insert(client.produce("jobs", keyed(&key)).await.unwrap().partition);
        }
        assert!(partitions.len() > 1, "twenty keys over four partitions");
        assert_eq!(
            group_lag(&client, "jobs", "g").await,
            Some(Lag {
                queued: 22,
                busy_partitions: partitions.len()
            })
        );
        assert_eq!(
            group_lag(&client, "jobs", "nobody").await,
            None,
            "no such group"
        );
        test_broker.stop().await;
    }

    #[test]
    fn a_flapping_lag_never_moves() {
        let c = cfg();
        let mut s = Scaler::default();
        for i in 0..20 {
            let queued = if i % 2 == 0 { 500 } else { 0 };
            assert_eq!(s.decide(&c, lag(queued), 2), Step::Hold);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn supervise_follows_the_lag_it_reads() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            ticket_svc::store::AnyStore::open(&format!(
                "sqlite://{}",
                dir.path().join("t.db").display()
            ))
            .await
            .unwrap(),
        );
        let queue = Arc::new(ticket_svc::queue::MemoryQueue::new(
            ticket_svc::queue::MemoryQueueConfig::default(),
        ));
        let lag = Arc::new(AtomicU64::new(0));
        let gauges = SupervisorMetrics::default();
        let stop = CancellationToken::new();
        let task = {
            let lag = Arc::clone(&lag);
            tokio::spawn(supervise(
                store,
                queue,
                Arc::new(Metrics::unregistered()),
                gauges.clone(),
                WorkerConfig::default(),
                cfg(),
                move || {
                    let v = lag.load(Ordering::Relaxed);
                    async move {
                        Some(Lag {
                            queued: v,
                            busy_partitions: 3,
                        })
                    }
                },
                stop.clone(),
            ))
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(gauges.workers.get(), 1, "starts at min");
        lag.store(1000, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(gauges.workers.get(), 3, "grows to max under sustained lag");
        lag.store(0, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(gauges.workers.get(), 1, "shrinks to min when drained");
        stop.cancel();
        task.await.unwrap();
        assert_eq!(gauges.workers.get(), 0);
    }
}
