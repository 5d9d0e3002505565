//! `ticket-svc up --cluster`: the stack as separate OS processes on loopback, so that any one of
//! them can die without taking the sale down: balancers, APIs, a broker cluster, workers, and
//! PostgreSQL as the store (the only tier this runner does not start).
//!
//! Every process is the running binary itself (`ticket-svc balancer`, `ticket-svc broker serve`,
//! `ticket-svc api`, `ticket-svc worker`), each supervised ([`process`]): restarted when it exits
//! unasked, its output appended to `DATA/logs/NAME.log`. Brokers keep their logs under
//! `DATA/broker-N`; the purchases and events live in PostgreSQL.
//!
//! Start order is back to front (brokers, workers, APIs, balancers), and the cluster is up once
//! `GET /healthz` through every balancer answers 200 (an API answers so once its store and a
//! broker leader answer). Stop order is front to back, each tier drained with SIGTERM before the
//! next: nothing accepted is dropped, and what no worker decided stays queued in the brokers.
//!
//! [`chaos`] kills a random process every few seconds and lets it come back; [`status`] is the
//! runner's own page and metrics (every process up or down, its restarts and exits).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ticket_svc::store::AnyStore;

use crate::credentials::StackCredentials;

mod addresses;
mod autoscale;
pub mod chaos;
mod config;
mod members;
mod plan;
pub mod process;
pub mod status;
mod worker_scale;

pub use addresses::Addresses;
pub use config::{ClusterConfig, ClusterError};
pub use members::Members;

use process::{Kind, Supervised};
use status::ClusterMetrics;

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Where everything listens.
    pub addresses: Addresses,
    /// The shared store, opened by the runner too (it made the schema before any process
    /// started; the demo puts its event on sale through it).
    pub store: Arc<AnyStore>,
    /// Where the processes' output goes.
    pub logs: PathBuf,
    /// The signing key and organizer token the APIs share (kept under the data dir).
    pub credentials: StackCredentials,
    /// Every process, in start order (brokers, workers, APIs, balancers).
    members: Members,
    drain_grace: Duration,
    metrics: Arc<ClusterMetrics>,
    /// Stops the status listener (last, after every process).
    status_stop: tokio_util::sync::CancellationToken,
    status_task: Option<tokio::task::JoinHandle<()>>,
    /// Stops the API and worker autoscalers (first, before any process).
    autoscale_stop: tokio_util::sync::CancellationToken,
    autoscale_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens the store (making its schema), starts every process, and waits until the cluster
/// answers through every balancer.
///
/// # Errors
/// A bad setting, an unusable data dir, the store unreachable, or the cluster not ready in time
/// (then everything started is stopped again).
pub async fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
    config.validate()?;
    let logs = config.data_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|cause| ClusterError::DataDir {
        dir: logs.display().to_string(),
        cause,
    })?;
    let status_listener = match config.status_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|cause| ClusterError::StatusListen { addr, cause })?,
        ),
        None => None,
    };
    let store = AnyStore::open_all(&config.db)
        .await
        .map_err(|e| ClusterError::Store(e.to_string()))?;
    let credentials = StackCredentials::load_or_create(&config.data_dir)
        .map_err(|e| ClusterError::Credentials(e.to_string()))?;
    let (specs, mut addresses, recipe) = plan::plan(&config, &logs, &credentials)?;
    let members = Members::default();
    for spec in specs {
        members.add(Arc::new(Supervised::start(spec)));
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(ClusterMetrics::new(&mut registry));
    let status_stop = tokio_util::sync::CancellationToken::new();
    let status_task = status_listener.map(|listener| {
        addresses.status = listener.local_addr().ok();
        let page = status::status_page(members.clone());
        let metrics = Arc::clone(&metrics);
        let members = members.clone();
        tokio::spawn(plumbing::metrics::serve_with_status(
            listener,
            Arc::new(registry),
            move || metrics.refresh(&members.all()),
            Some(page),
            status_stop.clone(),
        ))
    });
    let autoscale_stop = tokio_util::sync::CancellationToken::new();
    let mut autoscale_tasks = Vec::new();
    if config.max_apis > config.apis {
        let fleet = autoscale::ApiFleet {
            members: members.clone(),
            recipe: recipe.clone(),
            admins: addresses.admin.clone(),
            scaling: config.api_scaling(),
            drain_grace: config.drain_grace,
            metrics: Arc::clone(&metrics),
        };
        autoscale_tasks.push(tokio::spawn(fleet.run(autoscale_stop.clone())));
    }
    if config.max_workers > config.workers {
        let fleet = worker_scale::WorkerFleet {
            members: members.clone(),
            recipe,
            scaling: config.worker_scaling(),
            drain_grace: config.drain_grace,
            metrics: Arc::clone(&metrics),
        };
        autoscale_tasks.push(tokio::spawn(fleet.run(autoscale_stop.clone())));
    }
    let cluster = Cluster {
        addresses,
        store: Arc::new(store),
        logs,
        credentials,
        members,
        drain_grace: config.drain_grace,
        metrics,
        status_stop,
        status_task,
        autoscale_stop,
        autoscale_tasks,
    };
    if let Err(why) = cluster.wait_ready(config.ready_within).await {
        let logs = cluster.logs.display().to_string();
        cluster.stop().await;
        return Err(ClusterError::NotReady {
            within: config.ready_within,
            why,
            logs,
        });
    }
    Ok(cluster)
}

impl Cluster {
    /// Every process now, in start order.
    pub fn processes(&self) -> Vec<Arc<Supervised>> {
        self.members.all()
    }

    /// The process named `name` (`api 2`, `broker 1`, ...).
    pub fn process(&self, name: &str) -> Option<Arc<Supervised>> {
        self.members
            .all()
            .into_iter()
            .find(|p| p.spec().name() == name)
    }

    /// Polls `GET /healthz` through every balancer until each answers 200.
    async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        for public in &self.addresses.public {
            loop {
                let last = match plumbing::probe::status(
                    *public,
                    "/healthz",
                    Duration::from_secs(2),
                )
                .await
                {
                    Ok(200) => break,
                    Ok(s) => format!("GET /healthz through {public} answered {s}"),
                    Err(e) => format!("GET /healthz through {public}: {e}"),
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(last);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Stops every process front to back (balancers, APIs, workers, brokers), each tier
    /// drained together before the next.
    pub async fn stop(mut self) {
        self.autoscale_stop.cancel();
        for task in std::mem::take(&mut self.autoscale_tasks) {
            let _ = task.await;
        }
        for kind in [Kind::Balancer, Kind::Api, Kind::Worker, Kind::Broker] {
            let grace = self.drain_grace;
            let tier = self.members.take_kind(kind);
            run_together(tier.into_iter().map(|p| async move { p.stop(grace).await })).await;
        }
        self.status_stop.cancel();
        if let Some(task) = self.status_task.take() {
            let _ = task.await;
        }
    }
}

/// Runs every future to its end, together.
async fn run_together<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}
