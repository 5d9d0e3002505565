//! The broker's listeners: the client protocol on `--listen`, `/metrics` on `--metrics-listen`.
//!
//! [`Server::bind`] does everything that can fail at start (open and recover the data, bind
//! both ports) so `main` can report it in one line; [`Server::run`] serves until the shutdown
//! token fires, then drains: it stops accepting, lets in-flight requests finish (up to the
//! drain timeout), and syncs and closes every log and journal.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use plumbing::accept::{Accepted, Admitted, CappedListener, WhenFull};

use crate::cluster::node::{Cluster, ClusterError};
use crate::config::{BrokerConfig, ConfigError};
use crate::engine::{Broker, EngineError};
use crate::metrics::Metrics;

/// How often leases are checked for expiry.
const MAINTAIN_EVERY: Duration = Duration::from_millis(100);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be opened or recovered.
    #[error("cannot open data dir {dir}: {cause}")]
    Open {
        /// The directory.
        dir: String,
        /// The cause.
        cause: EngineError,
    },
    /// The cluster membership could not start.
    #[error("cannot join the cluster: {0}")]
    Cluster(ClusterError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {cause}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The cause.
        cause: std::io::Error,
    },
}

/// A bound, ready broker.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    registry: Arc<Registry>,
    cluster: Option<Arc<Cluster>>,
    /// Stops the cluster's tasks once the server stopped taking requests.
    cluster_stop: CancellationToken,
}

impl Server {
    /// Opens the data directory (recovering it) and binds the listeners.
    pub async fn bind(config: BrokerConfig, mut registry: Registry) -> Result<Self, ServerError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::new(&mut registry));
        let dir = config.data_dir.display().to_string();
        let listen = config.listen;
        let metrics_listen = config.metrics_listen;
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, metrics))
            .await
            .map_err(|_| ServerError::Open {
                dir: dir.clone(),
                cause: EngineError::ShuttingDown,
            })?
            .map_err(|cause| ServerError::Open { dir, cause })?;
        let broker = Arc::new(broker);
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(cause) => {
                broker.close();
                return Err(ServerError::Bind {
                    addr: listen,
                    what: "client listener",
                    cause,
                });
            }
        };
        let metrics_listener = match metrics_listen {
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(cause) => {
                    broker.close();
                    return Err(ServerError::Bind {
                        addr,
                        what: "metrics listener",
                        cause,
                    });
                }
            },
            None => None,
        };
        let cluster_stop = CancellationToken::new();
        let cluster = match broker.config().cluster.clone() {
            Some(c) => match Cluster::start(Arc::clone(&broker), c, cluster_stop.clone()).await {
                Ok(cluster) => Some(cluster),
                Err(e) => {
                    broker.close();
                    return Err(ServerError::Cluster(e));
                }
            },
            None => None,
        };
        Ok(Self {
            broker,
            listener,
            metrics_listener,
            registry: Arc::new(registry),
            cluster,
            cluster_stop,
        })
    }

    /// Where clients connect (useful after binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The broker's state (for tests and in-process embedding).
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.broker)
    }

    /// This broker's cluster membership, if it is in one.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.clone()
    }

    /// Serves until `shutdown` fires, then drains and closes.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            broker,
            listener,
            metrics_listener,
            registry,
            cluster,
            cluster_stop,
        } = self;
        let tasks = TaskTracker::new();
        let background = CancellationToken::new();
        {
            let broker = Arc::clone(&broker);
            let cluster = cluster.clone();
            let stop = background.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(MAINTAIN_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last_retention = tokio::time::Instant::now();
                let retain_every = broker.config().retention_check_interval;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = stop.cancelled() => break,
                    }
                    let retention = last_retention.elapsed() >= retain_every;
                    if retention {
                        last_retention = tokio::time::Instant::now();
                    }
                    // In a cluster only the serving leader expires leases and dead-letters;
                    // every broker applies retention to its own log, below the commit point
                    // it knows (a follower's comes with its leader's appends).
                    if cluster.as_ref().is_some_and(|c| !c.serving().ready) {
                        if retention {
                            broker.apply_retention().await;
                        }
                        continue;
                    }
                    broker.maintain(retention).await;
                }
            });
        }
        if let Some(l) = metrics_listener {
            let refreshed = Arc::clone(&broker);
            let cluster = cluster.clone();
            tasks.spawn(plumbing::metrics::serve(
                l,
                registry,
                move || {
                    refreshed.refresh_metrics();
                    if let Some(c) = &cluster {
                        c.refresh_metrics();
                    }
                },
                background.clone(),
            ));
        }
        let connections = TaskTracker::new();
        let listener =
            CappedListener::new(listener, broker.config().max_connections, WhenFull::Refuse);
        let ids = AtomicU64::new(1);
        let conn_shutdown = CancellationToken::new();
        while let Some(accepted) = listener.accept(&shutdown).await {
            let metrics = broker.metrics();
            let (stream, peer, permit) = match accepted {
                Accepted::Admitted(Admitted { stream, peer, slot }) => (stream, peer, slot),
                Accepted::OverCap { stream, peer } => {
                    metrics.connections_rejected.inc();
                    tracing::warn!(%peer, "connection limit reached; refusing");
                    connections.spawn(connection::refuse(stream));
                    continue;
                }
            };
            metrics.connections_accepted.inc();
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let broker = Arc::clone(&broker);
            let cluster = cluster.clone();
            let token = conn_shutdown.clone();
            let span = tracing::debug_span!("conn", %peer, id);
            connections.spawn(
                async move {
                    connection::serve(stream, peer, broker, cluster, id, token).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        drop(listener);
        tracing::info!("shutting down: draining connections");
        conn_shutdown.cancel();
        connections.close();
        let drain = broker.config().drain_timeout;
        if tokio::time::timeout(drain, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?drain,
                "connections still open after the drain timeout; closing"
            );
        }
        let drained = std::time::Instant::now();
        background.cancel();
        cluster_stop.cancel();
        if let Some(c) = &cluster {
            c.stop().await;
        }
        tasks.close();
        tasks.wait().await;
        let stopped = drained.elapsed();
        let closing = std::time::Instant::now();
        let b = Arc::clone(&broker);
        if tokio::task::spawn_blocking(move || b.close())
            .await
            .is_err()
        {
            tracing::error!("closing the logs panicked");
        }
        tracing::info!(
            background_stop = ?stopped,
            sync_and_close = ?closing.elapsed(),
            "broker stopped; every log and journal synced"
        );
    }
}
