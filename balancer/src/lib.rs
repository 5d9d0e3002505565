//! The ticketrush Layer-7 HTTP load balancer, as a library.
//!
//! The binary (`src/main.rs`) parses flags into a [`Config`] and calls [`Balancer`]; other
//! crates (the ticket-svc stack runner) do the same in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), balancer::BalancerError> {
//! use balancer::{BackendSpec, Balancer, Config};
//! use tokio_util::sync::CancellationToken;
//!
//! let backend = BackendSpec::new("127.0.0.1:8081".parse().unwrap());
//! let config = Config::new("127.0.0.1:0".parse().unwrap(), vec![backend]);
//! let balancer = Balancer::bind(config)?;          // binds now: port 0 is resolved here
//! let url = format!("http://{}", balancer.listen_addr());
//! let shutdown = CancellationToken::new();
//! let task = tokio::spawn(balancer.run(shutdown.clone()));
//! // ... use `url` ...
//! shutdown.cancel();                               // drain and stop
//! task.await.expect("balancer task panicked")?;
//! # Ok(()) }
//! ```
//!
//! Module map: [`config`] (flags, file, validation), [`listener`] (accept, limits, TLS),
//! [`smuggling`] (the CL+TE guard on what hyper's server reads), [`downstream`] (the
//! balancer's own HTTP/1.1 server), [`http1`] (head pieces its server and client share),
//! [`proxy`] (forwarding, headers, retries), [`upstream`] (backends, pool, health),
//! [`select`] (pure strategies), [`limit`] (rate, queue, retry budget), [`metrics`] (what
//! every layer counts), [`admin`] (serves metrics and status, backends API), [`state`] (what
//! tasks share), [`body`] (request bodies).

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod downstream;
pub mod http1;
pub mod limit;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod select;
pub mod smuggling;
pub mod state;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use config::{BackendSpec, Config, ConfigError, Strategy};
pub use state::BackendError;

use state::BalancerState;

/// Time background tasks get to stop after the drain.
const BACKGROUND_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors that stop the balancer from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound (port in use, permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A worker thread could not be started.
    #[error("cannot start worker thread: {0}")]
    Worker(std::io::Error),
}

/// A bound, not yet running balancer.
#[derive(Debug)]
pub struct Balancer {
    shared: Arc<BalancerState>,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    listen_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
}

/// Controls a running balancer from outside (reload, backends, status).
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<BalancerState>,
}

impl Balancer {
    /// Validates `config`, loads TLS material and binds every listener (port 0 resolves
    /// here). Nothing runs until [`Balancer::run`].
    pub fn bind(config: Config) -> Result<Self, BalancerError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(tls::load_acceptor).transpose()?;
        let reuse = config.workers > 1;
        let first = listener::bind(config.listen, reuse).map_err(|source| BalancerError::Bind {
            addr: config.listen,
            source,
        })?;
        let listen_addr = first.local_addr().map_err(|source| BalancerError::Bind {
            addr: config.listen,
            source,
        })?;
        let mut listeners = vec![first];
        for _ in 1..config.workers {
            listeners.push(listener::bind(listen_addr, true).map_err(|source| {
                BalancerError::Bind {
                    addr: listen_addr,
                    source,
                }
            })?);
        }
        let (admin, admin_addr) = match config.admin_listen {
            Some(addr) => {
                let l = listener::bind(addr, false)
                    .map_err(|source| BalancerError::Bind { addr, source })?;
                let a = l
                    .local_addr()
                    .map_err(|source| BalancerError::Bind { addr, source })?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let mut config = config;
        config.listen = listen_addr;
        config.admin_listen = admin_addr;
        Ok(Self {
            shared: BalancerState::new(config, tls),
            listeners,
            admin,
            listen_addr,
            admin_addr,
        })
    }

    /// The bound client-facing address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The bound admin address, if the admin listener is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// A handle for reloads and backend changes while running.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until `shutdown` is cancelled, then drains: stops accepting, lets in-flight
    /// requests finish up to the drain timeout, stops background work, returns `Ok`.
    /// Worker 0 runs on the caller's runtime; workers 1.. get a thread and a current-thread
    /// runtime each, with their own listener and pools.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BalancerError> {
        let shared = self.shared;
        let cfg = shared.config.load_full();
        shared.start_background();
        if let Some(admin) = self.admin {
            let addr = self.admin_addr.unwrap_or(cfg.listen);
            let admin = TcpListener::from_std(admin)
                .map_err(|source| BalancerError::Bind { addr, source })?;
            shared
                .background
                .spawn(admin::api::serve(admin, Arc::clone(&shared)));
        }
        let slots = Arc::new(Semaphore::new(
            cfg.limits.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        let mut listeners = self.listeners.into_iter();
        let first = listeners.next();
        let mut workers = Vec::new();
        for (i, l) in listeners.enumerate() {
            let worker = i + 1;
            let shared = Arc::clone(&shared);
            let slots = Arc::clone(&slots);
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("balancer-w{worker}"))
                .spawn(move || {
                    worker_thread(l, shared, worker, slots);
                    let _ = done_tx.send(());
                })
                .map_err(BalancerError::Worker)?;
            workers.push(done_rx);
        }
        tracing::info!(listen = %self.listen_addr, admin = ?self.admin_addr,
            backends = cfg.backends.len(), workers = cfg.workers, "balancer running");
        if let Some(first) = first {
            let l = TcpListener::from_std(first).map_err(|source| BalancerError::Bind {
                addr: self.listen_addr,
                source,
            })?;
            tokio::select! {
                _ = listener::serve(l, Arc::clone(&shared), 0, slots) => {}
                _ = shutdown.cancelled() => {}
            }
        } else {
            shutdown.cancelled().await;
        }
        shared.shutdown.cancel();
        let drain = shared.config.load().timeouts.drain;
        tracing::info!(connections = shared.conns.len(), ?drain, "draining");
        shared.conns.close();
        if tokio::time::timeout(drain, shared.conns.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = shared.conns.len(),
                "drain timeout: closing remaining connections"
            );
        }
        shared.hard_stop.cancel();
        for b in shared.backends.snapshot() {
            b.clear_pools();
        }
        shared.background.close();
        if tokio::time::timeout(BACKGROUND_STOP_TIMEOUT, shared.background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = shared.background.len(),
                "background tasks did not stop in time"
            );
        }
        for w in workers {
            let _ = tokio::time::timeout(BACKGROUND_STOP_TIMEOUT, w).await;
        }
        tracing::info!("balancer stopped");
        Ok(())
    }
}

fn worker_thread(
    listener: std::net::TcpListener,
    shared: Arc<BalancerState>,
    worker: usize,
    slots: Arc<Semaphore>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(worker, %error, "cannot build worker runtime");
            return;
        }
    };
    rt.block_on(async {
        match TcpListener::from_std(listener) {
            Ok(l) => listener::serve(l, Arc::clone(&shared), worker, slots).await,
            Err(error) => tracing::error!(worker, %error, "cannot register worker listener"),
        }
        // Keep this runtime alive (its connections and pools live on it) until the drain
        // is over.
        shared.hard_stop.cancelled().await;
    });
}

impl Handle {
    /// Applies a new config (backends, weights, strategy, limits, timeouts).
    pub fn reload(&self, config: Config) -> Result<(), BalancerError> {
        config.validate()?;
        self.shared.apply_config(config);
        Ok(())
    }

    /// Reloads the certificate and key from the configured paths.
    pub fn reload_tls(&self) -> Result<(), BalancerError> {
        if let Some(paths) = self.shared.config.load().tls.clone() {
            let acceptor = tls::load_acceptor(&paths)?;
            self.shared.tls.store(Some(Arc::new(acceptor)));
            tracing::info!("TLS certificate reloaded");
        }
        Ok(())
    }

    /// Adds a backend.
    pub fn add_backend(&self, spec: BackendSpec) -> Result<(), BackendError> {
        self.shared.add_backend(spec)
    }

    /// Drains and then removes a backend.
    pub fn drain_backend(&self, addr: SocketAddr) -> Result<(), BackendError> {
        self.shared.drain_backend(addr)
    }

    /// A status snapshot (what `/status.json` serves).
    pub fn status(&self) -> admin::status::Status {
        admin::status::snapshot(&self.shared)
    }

    /// The metrics text (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics_text()
    }
}

/// Binds and runs `config` until `shutdown` is cancelled (see [`Balancer`]).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), BalancerError> {
    Balancer::bind(config)?.run(shutdown).await
}
