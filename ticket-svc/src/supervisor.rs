//! The worker supervisor: scales the workers of `ticket-svc up` by the queue's length.
//!
//! Every `every` it reads the workers' group lag from the broker (records queued and not yet
//! decided). When the lag stays above `scale_up_lag` for `sustain` checks in a row it starts one
//! more worker (up to `max`); when it stays at or below `scale_down_lag` it stops one (down to
//! `min`), which first finishes the batch it is in. One step per decision, with hysteresis,
//! so a burst does not make it flap. The lag and the worker count are exported
//! (`ticket_supervisor_lag`, `ticket_supervisor_workers`) so an external autoscaler can follow
//! the same signal (the broker's own `broker_group_lag` is the same number).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::queue::PurchaseQueue;
use crate::store::Store;
use crate::worker::{Worker, WorkerConfig};

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
    pub fn decide(&mut self, config: &ScalingConfig, lag: u64, running: usize) -> Step {
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
        if self.above >= config.sustain && running < config.max {
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
pub async fn group_lag(client: &broker::client::Client, topic: &str, group: &str) -> Option<u64> {
    let stats = client.stats(topic).await.ok()?;
    stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == topic)?["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)?["lag"]
        .as_u64()
}

/// Gauges the supervisor exports.
#[derive(Debug, Clone, Default)]
pub struct SupervisorMetrics {
    /// `ticket_supervisor_workers`.
    pub workers: Gauge,
    /// `ticket_supervisor_lag`.
    pub lag: Gauge,
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
    Fut: std::future::Future<Output = Option<u64>>,
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
        gauges.lag.set(i64::try_from(observed).unwrap_or(i64::MAX));
        match scaler.decide(&config, observed, running.len()) {
            Step::Up => {
                start(&mut running);
                tracing::info!(
                    lag = observed,
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
                        lag = observed,
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
        assert_eq!(s.decide(&c, 500, 1), Step::Hold, "one check is not enough");
        assert_eq!(s.decide(&c, 500, 1), Step::Up);
        assert_eq!(s.decide(&c, 500, 2), Step::Hold);
        assert_eq!(s.decide(&c, 500, 2), Step::Up);
        assert_eq!(s.decide(&c, 500, 3), Step::Hold);
        assert_eq!(s.decide(&c, 500, 3), Step::Hold, "at max");
    }

    #[test]
    fn scales_down_when_drained_but_not_below_min_and_a_middle_lag_resets() {
        let c = cfg();
        let mut s = Scaler::default();
        assert_eq!(s.decide(&c, 0, 3), Step::Hold);
        assert_eq!(s.decide(&c, 50, 3), Step::Hold, "between thresholds: reset");
        assert_eq!(s.decide(&c, 0, 3), Step::Hold);
        assert_eq!(s.decide(&c, 0, 3), Step::Down);
        assert_eq!(s.decide(&c, 0, 2), Step::Hold);
        assert_eq!(s.decide(&c, 0, 2), Step::Down);
        assert_eq!(s.decide(&c, 0, 1), Step::Hold);
        assert_eq!(s.decide(&c, 0, 1), Step::Hold, "at min");
    }

    #[test]
    fn a_flapping_lag_never_moves() {
        let c = cfg();
        let mut s = Scaler::default();
        for i in 0..20 {
            let lag = if i % 2 == 0 { 500 } else { 0 };
            assert_eq!(s.decide(&c, lag, 2), Step::Hold);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn supervise_follows_the_lag_it_reads() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            crate::store::AnyStore::open(&format!(
                "sqlite://{}",
                dir.path().join("t.db").display()
            ))
            .await
            .unwrap(),
        );
        let queue = Arc::new(crate::queue::MemoryQueue::new(
            crate::queue::MemoryQueueConfig::default(),
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
                    async move { Some(v) }
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
