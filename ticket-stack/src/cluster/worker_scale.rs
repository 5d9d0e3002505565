//! The worker autoscaler of `up --cluster`: worker processes scaled by the queue's lag, with
//! the rule and thresholds of the in-process supervisor ([`crate::supervisor`]): one more while
//! more than `scale_up_lag` purchases stay queued (never more than the partitions with a
//! backlog: an event's line is decided by one worker at a time), one fewer while 5% of that or
//! fewer are. A worker stopped with SIGTERM finishes its batch first; what it held is handed to
//! another by the broker. The workers started with the cluster are never stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::members::Members;
use super::plan::{FreePorts, Recipe};
use super::process::{Kind, Supervised};
use super::status::ClusterMetrics;
use crate::supervisor::{Scaler, ScalingConfig, Step, group_lag};

/// What the worker autoscaler works with.
#[derive(Debug)]
pub(super) struct WorkerFleet {
    pub(super) members: Members,
    pub(super) recipe: Recipe,
    pub(super) scaling: ScalingConfig,
    pub(super) drain_grace: Duration,
    pub(super) metrics: Arc<ClusterMetrics>,
}

impl WorkerFleet {
    fn workers(&self) -> Vec<Arc<Supervised>> {
        self.members
            .all()
            .into_iter()
            .filter(|p| p.spec().kind == Kind::Worker)
            .collect()
    }

    /// Checks every `scaling.every` and acts, until `stop`.
    pub(super) async fn run(self, stop: CancellationToken) {
        let brokers = self.recipe.broker_list();
        let queue = ticket_svc::queue::BrokerQueueConfig::new(brokers.clone());
        let mut client: Option<broker::client::Client> = None;
        let mut scaler = Scaler::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.scaling.every) => {}
            }
            if client
                .as_ref()
                .is_none_or(broker::client::Client::is_closed)
            {
                let config = broker::client::ClientConfig::new(brokers.clone());
                client = broker::client::Client::connect(config).await.ok();
            }
            let Some(c) = &client else { continue };
            let Some(lag) = group_lag(c, &queue.topic, &queue.group).await else {
                // The broker cannot say now (an election): a new connection next time.
                client = None;
                continue;
            };
            let workers = self.workers();
            match scaler.decide(&self.scaling, lag, workers.len()) {
                Step::Up => self.add(&workers),
                Step::Down => {
                    if let Some(newest) = workers.iter().max_by_key(|p| p.spec().index)
                        && newest.spec().index > self.scaling.min
                    {
                        let name = newest.spec().name();
                        self.members.remove(&name);
                        newest.stop(self.drain_grace).await;
                        tracing::info!(process = %name, "worker removed: the queue is short");
                    }
                }
                Step::Hold => {}
            }
            self.metrics.workers_now(self.workers().len(), lag.queued);
        }
    }

    /// Starts worker `max index + 1`.
    fn add(&self, workers: &[Arc<Supervised>]) {
        let n = workers.iter().map(|p| p.spec().index).max().unwrap_or(0) + 1;
        match FreePorts::default().take() {
            Ok(metrics) => {
                let p = Arc::new(Supervised::start(self.recipe.worker(n, metrics)));
                tracing::info!(process = %p.spec().name(), "worker added: purchases are queued");
                self.members.add(p);
            }
            Err(e) => tracing::warn!(error = %e, "no port for a new worker's metrics"),
        }
    }
}
