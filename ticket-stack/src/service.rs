//! The service's own commands, `ticket-svc api` and `ticket-svc worker` (built with or without
//! the stack): their store and broker flags ([`ServiceDeps`]) and what each runs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access_args::AccessArgs;
use ticket_svc::http::{ApiConfig, ApiListeners, FrontDoor, ServeConfig, run_api};
use ticket_svc::line::BrokerLineLog;
use ticket_svc::queue::{BrokerQueue, BrokerQueueConfig};
use ticket_svc::store::AnyStore;
use ticket_svc::worker::{WorkerConfig, run_workers};

/// Cancels `shutdown` on SIGTERM or SIGINT.
///
/// # Errors
/// The handlers could not be installed.
pub fn cancel_on_signal(shutdown: CancellationToken) -> anyhow::Result<()> {
    plumbing::signals::cancel_on_stop_signal(shutdown)
        .context("installing the SIGTERM and SIGINT handlers")
}

/// The store and the broker that `api` and `worker` use.
#[derive(Debug, clap::Args)]
pub struct ServiceDeps {
    /// The broker (`host:port`), or a cluster's brokers, comma-separated: the API and the
    /// workers find the leader and follow it when it moves.
    #[arg(long, default_value = "127.0.0.1:7070")]
    broker: String,
    /// The broker's token, if it has one.
    #[arg(long, env = "TICKET_BROKER_TOKEN")]
    broker_token: Option<String>,
    /// The database: sqlite://PATH or postgres://... Given several times (or several
    /// comma-separated URLs in TICKET_DB), PostgreSQL sharded by event: every URL postgres://,
    /// the first is shard 0 (it holds the catalog of events' shards), each database records its
    /// place at first open and refuses another. Add a shard by appending a URL (to every worker
    /// first, then every API); never reorder or remove one. At most 256. Prefer the env var for
    /// a URL with a password: it stays out of `ps`.
    #[arg(
        long,
        default_value = "sqlite://data/tickets.db",
        env = "TICKET_DB",
        hide_env_values = true
    )]
    db: Vec<String>,
    /// A hot standby (PostgreSQL streaming replication) of a --db database that answers the
    /// reads of decided purchases (`GET /purchases/{id}`; a purchase pending there, or not yet
    /// there, is read from the primary, so no buyer ever sees one go back to pending). Given
    /// several times (or comma-separated in TICKET_DB_REPLICA), the i-th is shard i's; at most
    /// one per --db. Used by `api`; a worker, which reads no purchases, ignores it.
    #[arg(long, env = "TICKET_DB_REPLICA", hide_env_values = true)]
    db_replica: Vec<String>,
    /// How long to keep trying to reach the broker at start, in seconds.
    #[arg(long, default_value_t = 10)]
    connect_timeout_s: u64,
}

impl ServiceDeps {
    /// The store (with its read replicas when `reads`: the API reads purchases, a worker does
    /// not), the queue, and the queue's enqueue timeout.
    /// The store (with its read replicas when `reads`: the API reads purchases, a worker does
    /// not), the queue, and the queue's enqueue timeout.
    ///
    /// # Errors
    /// The store or the broker unreachable.
    pub async fn open(
        &self,
        reads: bool,
    ) -> anyhow::Result<(Arc<AnyStore>, Arc<BrokerQueue>, Duration)> {
        // Each value may itself be a comma-separated list (TICKET_DB); a URL with several hosts
        // stays whole.
        let urls: Vec<String> = self
            .db
            .iter()
            .flat_map(|v| ticket_svc::store::split_db_urls(v))
            .collect();
        let replicas: Vec<String> = self
            .db_replica
            .iter()
            .filter(|_| reads)
            .flat_map(|v| ticket_svc::store::split_db_urls(v))
            .collect();
        let store = AnyStore::open_with_replicas(&urls, &replicas)
            .await
            .with_context(|| {
                let shown: Vec<String> = urls
                    .iter()
                    .map(|u| ticket_svc::store::redacted_url(u))
                    .collect();
                format!("cannot open the store {}", shown.join(", "))
            })?;
        let mut config = BrokerQueueConfig::new(self.broker.clone());
        config.token = self.broker_token.clone();
        let enqueue_timeout = config.enqueue_timeout;
        let queue = BrokerQueue::connect(config, Duration::from_secs(self.connect_timeout_s))
            .await
            .with_context(|| format!("cannot reach the broker at {}", self.broker))?;
        Ok((Arc::new(store), Arc::new(queue), enqueue_timeout))
    }
}

/// The `--metrics-listen` listener, if one was asked for.
async fn bind_metrics(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?,
        )),
        None => Ok(None),
    }
}

/// `ticket-svc api`: the API on `listen` (and `/metrics` on `metrics_listen`) until SIGTERM or
/// SIGINT, then drained.
///
/// # Errors
/// A bad flag value, a port in use, the store or the broker unreachable.
pub async fn api(
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    deps: ServiceDeps,
    access: AccessArgs,
) -> anyhow::Result<ExitCode> {
    let access = access.gatekeeper()?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let metrics = bind_metrics(metrics_listen).await?;
    let (store, queue, enqueue_timeout) = deps.open(true).await?;
    let line_log = Arc::new(BrokerLineLog::new(queue.config()));
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone())?;
    tracing::info!(listen = %listener.local_addr()?, broker = %deps.broker, "api serving");
    let config = ApiConfig {
        enqueue_timeout,
        ..ApiConfig::default()
    };
    run_api(
        ApiListeners {
            public: listener,
            metrics,
        },
        store,
        queue,
        FrontDoor { access, line_log },
        config,
        ServeConfig::default(),
        shutdown,
    )
    .await
    .context("api")?;
    tracing::info!("api drained and stopped");
    Ok(ExitCode::SUCCESS)
}

/// `ticket-svc worker`: `workers` worker loops until SIGTERM or SIGINT, each finishing its
/// batch.
///
/// # Errors
/// A port in use, the store or the broker unreachable.
pub async fn worker(
    deps: ServiceDeps,
    workers: usize,
    config: WorkerConfig,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let metrics_listener = bind_metrics(metrics_listen).await?;
    let (store, queue, _) = deps.open(false).await?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone())?;
    tracing::info!(
        workers,
        batch = config.batch_max_jobs,
        linger = ?config.linger,
        store_patience = ?config.store_patience,
        broker = %deps.broker,
        "workers running"
    );
    run_workers(store, queue, workers, config, metrics_listener, shutdown)
        .await
        .context("worker")?;
    tracing::info!("workers finished their batches and stopped");
    Ok(ExitCode::SUCCESS)
}
