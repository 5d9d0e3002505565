//! The whole stack in one process on loopback: the broker, N API instances, the balancer in
//! front of them and M workers (scaled by the queue's lag, see [`crate::supervisor`]), on real
//! TCP sockets, with SQLite under the data dir. This is the composition root behind
//! `ticket-svc up` and `ticket-svc demo`.
//!
//! Shutdown runs front to back so nothing accepted is dropped: the balancer and the APIs stop
//! taking requests and finish what they hold, then the workers stop, then the pending rows still
//! held in memory are written, then the broker syncs and closes. Everything durable is under the
//! data dir, so a restart on it keeps every event and purchase (and the broker redelivers
//! whatever no worker had acknowledged).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::credentials::StackCredentials;
use crate::supervisor::{ScalingConfig, SupervisorMetrics, group_lag, supervise};
use ticket_svc::access::{Access, AccessConfig};
use ticket_svc::config_error::ConfigError;
use ticket_svc::http::{ApiConfig, ApiListeners, FrontDoor, ServeConfig, run_api};
use ticket_svc::line::{BrokerLineLog, LineLog};
use ticket_svc::metrics::Metrics;
use ticket_svc::queue::{BrokerQueue, BrokerQueueConfig};
use ticket_svc::store::{AnyStore, PendingRows, SqliteStore};
use ticket_svc::worker::WorkerConfig;

/// What to start.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Broker log and SQLite database live here.
    pub data_dir: PathBuf,
    /// API instances.
    pub apis: usize,
    /// Workers at the start and at least (the supervisor's minimum).
    pub workers: usize,
    /// Workers at most: the supervisor adds workers up to this while the queue stays long.
    pub max_workers: usize,
    /// Queued purchases above which the supervisor adds a worker.
    pub scale_up_lag: u64,
    /// The balancer's public address.
    pub listen: SocketAddr,
    /// The balancer's admin address (status page, metrics).
    pub admin_listen: SocketAddr,
    /// Partitions of the purchases topic.
    pub partitions: u32,
    /// The broker's fsync policy.
    pub fsync: broker::config::FsyncPolicy,
    /// Where the APIs send login codes: `log` or a webhook URL (`api --login-sender`).
    pub login_sender: String,
}

impl StackConfig {
    /// Defaults for `data_dir`: 3 APIs, 2 to 8 workers (one more while over 1,000 purchases are
    /// queued), public 127.0.0.1:8080, admin 127.0.0.1:9080, 8 partitions, fsync always.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            apis: 3,
            workers: 2,
            max_workers: 8,
            scale_up_lag: 1000,
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9080).into(),
            partitions: 8,
            fsync: broker::config::FsyncPolicy::Always,
            login_sender: "log".into(),
        }
    }
}

impl StackConfig {
    /// Checks every setting's range (the broker's, the workers' and the balancer's own
    /// configurations are checked where they are made).
    ///
    /// # Errors
    /// The first setting out of its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(self.apis > 0, "StackConfig::apis", "must be at least 1")?;
        ConfigError::check(
            self.workers > 0,
            "StackConfig::workers",
            "must be at least 1",
        )?;
        ConfigError::check(
            self.max_workers >= self.workers,
            "StackConfig::max_workers",
            "must be at least workers",
        )?;
        ConfigError::check(
            (1..=broker::config::MAX_PARTITIONS).contains(&self.partitions),
            "StackConfig::partitions",
            format!("must be 1 to {}", broker::config::MAX_PARTITIONS),
        )?;
        self.scaling().validate()
    }

    /// The supervisor's settings: `workers` to `max_workers`, one more above `scale_up_lag`
    /// queued, one fewer at 5% of that or less.
    fn scaling(&self) -> ScalingConfig {
        let mut scaling = ScalingConfig::new(self.workers, self.max_workers);
        scaling.scale_up_lag = self.scale_up_lag;
        scaling.scale_down_lag = self.scale_up_lag / 20;
        scaling
    }
}

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The data dir could not be made.
    #[error("cannot use data dir {dir}: {cause}")]
    DataDir {
        /// The directory.
        dir: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker did not start.
    #[error("broker: {0}")]
    Broker(#[from] broker::server::ServerError),
    /// The store did not open.
    #[error("store: {0}")]
    Store(String),
    /// The queue could not reach the broker.
    #[error("queue: {0}")]
    Queue(String),
    /// An API listener could not be bound.
    #[error("api listener: {0}")]
    Listen(std::io::Error),
    /// The APIs' credentials could not be read or made, or are not valid.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The balancer did not start.
    #[error("balancer: {0}")]
    Balancer(#[from] balancer::BalancerError),
    /// The stack did not become ready in time.
    #[error("not ready after {0:?}: {1}")]
    NotReady(Duration, String),
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    /// The balancer's public address: where buyers go.
    pub public: SocketAddr,
    /// The balancer's admin address (`/status`, `/metrics`).
    pub admin: Option<SocketAddr>,
    /// The broker's client address.
    pub broker: SocketAddr,
    /// The broker's `/metrics` address.
    pub broker_metrics: Option<SocketAddr>,
    /// Each API instance's own address.
    pub apis: Vec<SocketAddr>,
    /// Each API instance's `/metrics` address.
    pub api_metrics: Vec<SocketAddr>,
    /// The signing key and organizer token the APIs share (kept under the data dir).
    pub credentials: StackCredentials,
    /// The workers' `/metrics` address.
    pub worker_metrics: Option<SocketAddr>,
    /// The shared store.
    pub store: Arc<AnyStore>,
    front: CancellationToken,
    workers_stop: CancellationToken,
    broker_stop: CancellationToken,
    front_tasks: JoinSet<()>,
    worker_tasks: JoinSet<()>,
    /// Writes the pending rows held in memory too long, and all of them at stop.
    store_stop: CancellationToken,
    store_tasks: JoinSet<()>,
    broker_task: tokio::task::JoinHandle<()>,
}

fn dir_error(dir: &Path, cause: std::io::Error) -> StackError {
    StackError::DataDir {
        dir: dir.display().to_string(),
        cause,
    }
}

/// Starts everything and waits until a request through the balancer reaches a ready API.
pub async fn start(config: StackConfig) -> Result<Stack, StackError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| dir_error(&config.data_dir, e))?;
    let loopback0: SocketAddr = ([127, 0, 0, 1], 0).into();

    // The broker.
    let mut bcfg = broker::config::BrokerConfig::new(config.data_dir.join("broker"), loopback0);
    bcfg.metrics_listen = Some(loopback0);
    bcfg.fsync = config.fsync;
    let server = broker::server::Server::bind(bcfg, Registry::default()).await?;
    let broker_addr = server.local_addr().map_err(StackError::Listen)?;
    let broker_metrics = server.metrics_addr();
    let broker_stop = CancellationToken::new();
    let broker_task = tokio::spawn(server.run(broker_stop.clone()));

    // The store, shared by every instance in this process. Every API reading it is here, so
    // pending rows may wait in memory for their decision (see `store::PendingRows`).
    let db = config.data_dir.join("tickets.db");
    let sqlite = SqliteStore::open_with(&db, PendingRows::InMemory)
        .await
        .map_err(|e| StackError::Store(e.to_string()))?;
    let store = Arc::new(AnyStore::Sqlite(sqlite.clone()));

    // The API instances, each with its own listener and metrics. Like the store, the broker's
    // producer pool is shared: one Produce in flight for the whole process, so the jobs of every
    // instance share each of the partition's fsyncs. A pool per instance put three Produces out
    // at once and doubled the broker's fsyncs, each with half the jobs.
    let credentials = StackCredentials::load_or_create(&config.data_dir)
        .map_err(|e| StackError::Credentials(e.to_string()))?;
    let front = CancellationToken::new();
    let mut front_tasks = JoinSet::new();
    let mut apis = Vec::with_capacity(config.apis);
    let mut api_metrics = Vec::with_capacity(config.apis);
    let mut qcfg = BrokerQueueConfig::new(broker_addr.to_string());
    qcfg.partitions = config.partitions;
    let queue = Arc::new(
        BrokerQueue::connect(qcfg.clone(), Duration::from_secs(10))
            .await
            .map_err(|e| StackError::Queue(e.to_string()))?,
    );
    // One line log for every instance, like the producer pool: an event's line is one topic.
    let line_log: Arc<dyn LineLog> = Arc::new(BrokerLineLog::new(queue.config()));
    for _ in 0..config.apis.max(1) {
        let queue = Arc::clone(&queue);
        let listener = tokio::net::TcpListener::bind(loopback0)
            .await
            .map_err(StackError::Listen)?;
        apis.push(listener.local_addr().map_err(StackError::Listen)?);
        let metrics_listener = tokio::net::TcpListener::bind(loopback0)
            .await
            .map_err(StackError::Listen)?;
        api_metrics.push(metrics_listener.local_addr().map_err(StackError::Listen)?);
        let access = AccessConfig::from_flags(
            &[credentials.signing_key.as_str()],
            &[credentials.organizer_token.as_str()],
            &config.login_sender,
            AccessConfig::DEFAULT_SESSION_TTL,
        )
        .map_err(|e| StackError::Credentials(e.to_string()))?;
        let stop = front.clone();
        let store = Arc::clone(&store);
        let line_log = Arc::clone(&line_log);
        front_tasks.spawn(async move {
            let served = run_api(
                ApiListeners {
                    public: listener,
                    metrics: Some(metrics_listener),
                },
                store,
                queue,
                FrontDoor {
                    access: Access::new(access),
                    line_log,
                },
                ApiConfig::default(),
                ServeConfig::default(),
                stop,
            )
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "api instance stopped with an error");
            }
        });
    }

    // The balancer in front of them.
    let backends = apis
        .iter()
        .map(|a| balancer::BackendSpec::new(*a))
        .collect();
    let mut lb = balancer::Config::new(config.listen, backends);
    lb.admin_listen = Some(config.admin_listen);
    lb.strategy = balancer::Strategy::LeastConn;
    // The balancer's own interval (1 s; 2 failures eject). Every check opens a connection and
    // its /healthz asks the store and the broker: at 500 ms an idle `up` spent ~1.3% of a core.
    let lb = balancer::Balancer::bind(lb)?;
    let public = lb.listen_addr();
    let admin = lb.admin_addr();
    let stop = front.clone();
    front_tasks.spawn(async move {
        if let Err(e) = lb.run(stop).await {
            tracing::error!(error = %e, "balancer stopped with an error");
        }
    });

    // The workers.
    let workers_stop = CancellationToken::new();
    let mut worker_tasks = JoinSet::new();
    let worker_queue = Arc::new(
        BrokerQueue::connect(qcfg.clone(), Duration::from_secs(10))
            .await
            .map_err(|e| StackError::Queue(e.to_string()))?,
    );
    let metrics_listener = tokio::net::TcpListener::bind(loopback0)
        .await
        .map_err(StackError::Listen)?;
    let worker_metrics = metrics_listener.local_addr().ok();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let gauges = SupervisorMetrics::new(&mut registry);
    let held = Gauge::default();
    registry.register(
        "ticket_store_pending_held",
        "Pending purchases held in memory: accepted, not yet decided, not yet written as pending",
        held.clone(),
    );
    let store_stop = CancellationToken::new();
    let mut store_tasks = JoinSet::new();
    store_tasks.spawn({
        let stop = store_stop.clone();
        async move { sqlite.write_held_rows(held, stop).await }
    });
    let stop = workers_stop.clone();
    worker_tasks.spawn(async move {
        plumbing::metrics::serve(metrics_listener, Arc::new(registry), || {}, stop).await;
    });
    let lag_client =
        broker::client::Client::connect(broker::client::ClientConfig::new(broker_addr.to_string()))
            .await
            .map_err(|e| StackError::Queue(e.to_string()))?;
    let (topic, group) = (qcfg.topic.clone(), qcfg.group.clone());
    let scaling = config.scaling();
    worker_tasks.spawn(supervise(
        Arc::clone(&store),
        worker_queue,
        metrics,
        gauges,
        WorkerConfig::default(),
        scaling,
        move || {
            let (client, topic, group) = (lag_client.clone(), topic.clone(), group.clone());
            async move { group_lag(&client, &topic, &group).await }
        },
        workers_stop.clone(),
    ));

    let stack = Stack {
        public,
        admin,
        broker: broker_addr,
        broker_metrics,
        apis,
        api_metrics,
        credentials,
        worker_metrics,
        store,
        front,
        workers_stop,
        broker_stop,
        front_tasks,
        worker_tasks,
        store_stop,
        store_tasks,
        broker_task,
    };
    let ready = Duration::from_secs(20);
    if let Err(why) = wait_ready(public, ready).await {
        stack.stop().await;
        return Err(StackError::NotReady(ready, why));
    }
    Ok(stack)
}

/// Polls `GET /healthz` through the balancer until it answers 200.
async fn wait_ready(public: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::from("no answer");
    while tokio::time::Instant::now() < deadline {
        match plumbing::probe::status(public, "/healthz", Duration::from_secs(2)).await {
            Ok(200) => return Ok(()),
            Ok(s) => last = format!("GET /healthz answered {s}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

impl Stack {
    /// Stops the stack front to back and waits for every part.
    pub async fn stop(mut self) {
        self.front.cancel();
        while self.front_tasks.join_next().await.is_some() {}
        self.workers_stop.cancel();
        while self.worker_tasks.join_next().await.is_some() {}
        // What no worker decided stays queued; its pending rows go on record for the restart.
        self.store_stop.cancel();
        while self.store_tasks.join_next().await.is_some() {}
        self.broker_stop.cancel();
        let _ = self.broker_task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate_and_each_range_is_checked() {
        ticket_svc::testing::assert_each_refused(
            &StackConfig::new("data"),
            StackConfig::validate,
            &[
                ("StackConfig::apis", |c| c.apis = 0),
                ("StackConfig::workers", |c| c.workers = 0),
                ("StackConfig::max_workers", |c| c.max_workers = 1),
                ("StackConfig::partitions", |c| c.partitions = 0),
                ("StackConfig::partitions", |c| c.partitions = 1_000_000),
            ],
        );
    }

    #[tokio::test]
    async fn start_refuses_a_bad_config_before_it_starts_anything() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StackConfig::new(dir.path().join("never"));
        config.apis = 0;
        let Err(e) = start(config).await else {
            panic!("a stack with no APIs started");
        };
        assert!(matches!(e, StackError::Config(_)), "{e}");
        assert!(!dir.path().join("never").exists(), "nothing was made");
    }
}
