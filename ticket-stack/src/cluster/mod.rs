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

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ticket_svc::config_error::ConfigError;
use ticket_svc::store::AnyStore;

pub mod chaos;
pub mod process;
pub mod status;

use process::{Kind, ProcessSpec, ProcessView, Supervised};
use status::ClusterMetrics;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `ticket-svc` binary every process runs (usually this one).
    pub program: PathBuf,
    /// The brokers' logs and every process's output live here.
    pub data_dir: PathBuf,
    /// The store: a `postgres://` URL (every API and worker process shares it).
    pub db: String,
    /// Balancers, each in front of every API.
    pub balancers: usize,
    /// API processes.
    pub apis: usize,
    /// Broker nodes: 1, or 3 or 5 as a replicated cluster.
    pub brokers: usize,
    /// Worker processes.
    pub workers: usize,
    /// The first balancer's public address; balancer `k` (from 0) listens on its port + `k`.
    /// Port 0: each picks a free port.
    pub listen: SocketAddr,
    /// The first balancer's admin address, numbered the same way.
    pub admin_listen: SocketAddr,
    /// The runner's own `/status` page and `/metrics` (none: not served).
    pub status_listen: Option<SocketAddr>,
    /// How long each process may take to drain after SIGTERM before it is killed.
    pub drain_grace: Duration,
    /// How long to wait for the cluster to answer through every balancer.
    pub ready_within: Duration,
}

impl ClusterConfig {
    /// Two balancers (public 127.0.0.1:8080 and :8081, admin :9080 and :9081), three APIs, three
    /// brokers, two workers, the runner's status on 127.0.0.1:9079; 15 s to drain, 60 s to come
    /// up.
    pub fn new(program: impl Into<PathBuf>, data_dir: impl Into<PathBuf>, db: &str) -> Self {
        Self {
            program: program.into(),
            data_dir: data_dir.into(),
            db: db.to_owned(),
            balancers: 2,
            apis: 3,
            brokers: 3,
            workers: 2,
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9080).into(),
            status_listen: Some(([127, 0, 0, 1], 9079).into()),
            drain_grace: Duration::from_secs(15),
            ready_within: Duration::from_secs(60),
        }
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// The first setting out of its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (n, name) in [
            (self.balancers, "ClusterConfig::balancers"),
            (self.apis, "ClusterConfig::apis"),
            (self.workers, "ClusterConfig::workers"),
        ] {
            ConfigError::check((1..=16).contains(&n), name, "must be 1 to 16")?;
        }
        ConfigError::check(
            matches!(self.brokers, 1 | 3 | 5),
            "ClusterConfig::brokers",
            "must be 1, 3 or 5",
        )?;
        ConfigError::check(
            self.db.starts_with("postgres://") || self.db.starts_with("postgresql://"),
            "ClusterConfig::db",
            "must be a postgres:// URL: the processes of a cluster share one database",
        )?;
        for (addr, name) in [
            (self.listen, "ClusterConfig::listen"),
            (self.admin_listen, "ClusterConfig::admin_listen"),
        ] {
            ConfigError::check(
                addr.port() == 0 || addr.port().checked_add(self.balancers as u16).is_some(),
                name,
                "leaves no room for a port per balancer",
            )?;
        }
        Ok(())
    }
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data dir could not be made.
    #[error("cannot use data dir {dir}: {cause}")]
    DataDir {
        /// The directory.
        dir: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// No free port could be found.
    #[error("no free port on loopback: {0}")]
    Port(std::io::Error),
    /// The runner's status listener could not be bound.
    #[error("cannot listen on {addr} for the status page: {cause}")]
    StatusListen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        cause: std::io::Error,
    },
    /// The store did not open.
    #[error("store: {0}")]
    Store(String),
    /// The cluster did not answer through every balancer in time.
    #[error("not ready after {within:?}: {why} (the processes' output is in {logs})")]
    NotReady {
        /// How long it waited.
        within: Duration,
        /// The last answer.
        why: String,
        /// Where the logs are.
        logs: String,
    },
}

/// Free ports on loopback, each held until the pool is dropped so no two are the same; the
/// processes that will listen on them start after that.
#[derive(Default)]
struct FreePorts(Vec<TcpListener>);

impl FreePorts {
    /// A port free now and unlike any other this pool gave.
    fn take(&mut self) -> Result<SocketAddr, ClusterError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(ClusterError::Port)?;
        let addr = listener.local_addr().map_err(ClusterError::Port)?;
        self.0.push(listener);
        Ok(addr)
    }

    /// `base` with its port + `k`, or a free port when `base`'s port is 0.
    fn numbered(&mut self, base: SocketAddr, k: usize) -> Result<SocketAddr, ClusterError> {
        if base.port() == 0 {
            return self.take();
        }
        let mut addr = base;
        addr.set_port(base.port().saturating_add(k as u16));
        Ok(addr)
    }
}

/// The addresses of a running cluster.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// Each balancer's public address: where buyers go.
    pub public: Vec<SocketAddr>,
    /// Each balancer's admin address (`/status`, `/metrics`).
    pub admin: Vec<SocketAddr>,
    /// Each API's address (`/metrics` per API).
    pub apis: Vec<SocketAddr>,
    /// Each broker's client address.
    pub brokers: Vec<SocketAddr>,
    /// Each broker's `/metrics` address.
    pub broker_metrics: Vec<SocketAddr>,
    /// Each worker process's `/metrics` address.
    pub worker_metrics: Vec<SocketAddr>,
    /// The runner's `/status` and `/metrics`.
    pub status: Option<SocketAddr>,
}

impl std::fmt::Display for Addresses {
    /// Every URL, a line each, as `up --cluster` prints them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ticketrush is up (a cluster of processes)")?;
        if let Some(status) = self.status {
            writeln!(
                f,
                "  processes:            http://{status}/status  (metrics: /metrics)"
            )?;
        }
        for (i, (public, admin)) in self.public.iter().zip(&self.admin).enumerate() {
            let n = i + 1;
            writeln!(f, "  buyers (balancer {n}):  http://{public}")?;
            writeln!(
                f,
                "  balancer {n} status:    http://{admin}/status  (metrics: /metrics)"
            )?;
        }
        for (i, (addr, metrics)) in self.brokers.iter().zip(&self.broker_metrics).enumerate() {
            writeln!(
                f,
                "  broker {}:             {addr}  (metrics: http://{metrics}/metrics)",
                i + 1
            )?;
        }
        for (i, api) in self.apis.iter().enumerate() {
            writeln!(f, "  api {} metrics:        http://{api}/metrics", i + 1)?;
        }
        for (i, metrics) in self.worker_metrics.iter().enumerate() {
            writeln!(
                f,
                "  worker {} metrics:     http://{metrics}/metrics",
                i + 1
            )?;
        }
        Ok(())
    }
}

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
    /// Every process, in start order (brokers, workers, APIs, balancers).
    processes: Vec<Supervised>,
    drain_grace: Duration,
    metrics: Arc<ClusterMetrics>,
    /// Stops the status listener (last, after every process).
    status_stop: tokio_util::sync::CancellationToken,
    status_task: Option<tokio::task::JoinHandle<()>>,
}

/// The processes' specs and the addresses they will listen on.
fn plan(
    config: &ClusterConfig,
    logs: &std::path::Path,
) -> Result<(Vec<ProcessSpec>, Addresses), ClusterError> {
    let mut a = Addresses::default();
    let mut ports = FreePorts::default();
    for _ in 0..config.brokers {
        a.brokers.push(ports.take()?);
        a.broker_metrics.push(ports.take()?);
    }
    for _ in 0..config.workers {
        a.worker_metrics.push(ports.take()?);
    }
    for _ in 0..config.apis {
        a.apis.push(ports.take()?);
    }
    for k in 0..config.balancers {
        a.public.push(ports.numbered(config.listen, k)?);
        a.admin.push(ports.numbered(config.admin_listen, k)?);
    }
    let broker_list = a
        .brokers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let peers = a
        .brokers
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{}={b}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let db_env = vec![("TICKET_DB".to_owned(), config.db.clone())];
    let spec = |kind: Kind,
                index: usize,
                address: String,
                args: Vec<String>,
                env: Vec<(String, String)>| {
        let log = logs.join(format!("{}-{index}.log", kind.name()));
        ProcessSpec {
            kind,
            index,
            program: config.program.clone(),
            args,
            env,
            log,
            address,
        }
    };
    let mut specs = Vec::new();
    for (i, (addr, metrics)) in a.brokers.iter().zip(&a.broker_metrics).enumerate() {
        let n = i + 1;
        let mut args = vec![
            "broker".into(),
            "serve".into(),
            format!("--listen={addr}"),
            format!("--metrics-listen={metrics}"),
            format!(
                "--data-dir={}",
                config.data_dir.join(format!("broker-{n}")).display()
            ),
        ];
        if config.brokers > 1 {
            args.push(format!("--node-id={n}"));
            args.push(format!("--peers={peers}"));
        }
        specs.push(spec(Kind::Broker, n, addr.to_string(), args, Vec::new()));
    }
    for (i, metrics) in a.worker_metrics.iter().enumerate() {
        let args = vec![
            "worker".into(),
            format!("--broker={broker_list}"),
            format!("--metrics-listen={metrics}"),
        ];
        let address = format!("http://{metrics}/metrics");
        specs.push(spec(Kind::Worker, i + 1, address, args, db_env.clone()));
    }
    for (i, addr) in a.apis.iter().enumerate() {
        let args = vec![
            "api".into(),
            format!("--listen={addr}"),
            format!("--broker={broker_list}"),
        ];
        let address = format!("http://{addr}");
        specs.push(spec(Kind::Api, i + 1, address, args, db_env.clone()));
    }
    for (i, (public, admin)) in a.public.iter().zip(&a.admin).enumerate() {
        let mut args = vec![
            "balancer".into(),
            format!("--listen={public}"),
            format!("--admin-listen={admin}"),
            "--strategy=least-conn".into(),
        ];
        args.extend(a.apis.iter().map(|api| format!("--backend={api}")));
        let address = format!("http://{public}");
        specs.push(spec(Kind::Balancer, i + 1, address, args, Vec::new()));
    }
    Ok((specs, a))
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
    let store = AnyStore::open(&config.db)
        .await
        .map_err(|e| ClusterError::Store(e.to_string()))?;
    let (specs, mut addresses) = plan(&config, &logs)?;
    let processes: Vec<Supervised> = specs.into_iter().map(Supervised::start).collect();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(ClusterMetrics::new(&mut registry));
    let status_stop = tokio_util::sync::CancellationToken::new();
    let status_task = status_listener.map(|listener| {
        addresses.status = listener.local_addr().ok();
        let views: Arc<[ProcessView]> = processes.iter().map(Supervised::view).collect();
        let page = status::status_page(Arc::clone(&views));
        let metrics = Arc::clone(&metrics);
        tokio::spawn(plumbing::metrics::serve_with_status(
            listener,
            Arc::new(registry),
            move || metrics.refresh(&views),
            Some(page),
            status_stop.clone(),
        ))
    });
    let cluster = Cluster {
        addresses,
        store: Arc::new(store),
        logs,
        processes,
        drain_grace: config.drain_grace,
        metrics,
        status_stop,
        status_task,
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
    /// Every process, in start order.
    pub fn processes(&self) -> &[Supervised] {
        &self.processes
    }

    /// The process named `name` (`api 2`, `broker 1`, ...).
    pub fn process(&self, name: &str) -> Option<&Supervised> {
        self.processes.iter().find(|p| p.spec().name() == name)
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
        for kind in [Kind::Balancer, Kind::Api, Kind::Worker, Kind::Broker] {
            let (tier, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.processes)
                .into_iter()
                .partition(|p| p.spec().kind == kind);
            self.processes = rest;
            let grace = self.drain_grace;
            run_together(tier.into_iter().map(|p| p.stop(grace))).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig::new("ticket-svc", "data", "postgres://u@127.0.0.1/db")
    }

    #[test]
    fn the_defaults_validate_and_each_range_is_checked() {
        ticket_svc::testing::assert_each_refused(
            &config(),
            ClusterConfig::validate,
            &[
                ("ClusterConfig::balancers", |c| c.balancers = 0),
                ("ClusterConfig::apis", |c| c.apis = 17),
                ("ClusterConfig::workers", |c| c.workers = 0),
                ("ClusterConfig::brokers", |c| c.brokers = 2),
                ("ClusterConfig::db", |c| c.db = "sqlite://x.db".into()),
                ("ClusterConfig::listen", |c| {
                    c.listen = ([127, 0, 0, 1], u16::MAX).into();
                }),
            ],
        );
    }

    #[test]
    fn the_plan_wires_every_process_to_the_others() {
        let dir = std::path::Path::new("logs");
        let (specs, a) = plan(&config(), dir).unwrap();
        let count = |k: Kind| specs.iter().filter(|s| s.kind == k).count();
        assert_eq!(
            [Kind::Broker, Kind::Worker, Kind::Api, Kind::Balancer].map(count),
            [3, 2, 3, 2]
        );
        assert_eq!(a.public[1].port(), 8081);
        assert_eq!(a.admin[1].port(), 9081);
        let brokers = a
            .brokers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        for s in &specs {
            let args = s.args.join(" ");
            match s.kind {
                Kind::Broker => {
                    assert!(
                        args.contains(&format!("--peers=1={}", brokers[0])),
                        "{args}"
                    );
                    assert!(args.contains(&format!("--node-id={}", s.index)));
                }
                Kind::Api | Kind::Worker => {
                    assert!(args.contains(&format!("--broker={}", brokers.join(","))));
                    assert_eq!(
                        s.env,
                        [("TICKET_DB".into(), config().db)],
                        "the URL stays out of ps"
                    );
                    assert!(!args.contains("postgres"));
                }
                Kind::Balancer => {
                    for api in &a.apis {
                        assert!(args.contains(&format!("--backend={api}")), "{args}");
                    }
                }
            }
            assert_eq!(
                s.log,
                dir.join(format!("{}-{}.log", s.kind.name(), s.index))
            );
        }
        let mut one = config();
        one.brokers = 1;
        let (specs, _) = plan(&one, dir).unwrap();
        assert!(
            !specs[0].args.iter().any(|a| a.starts_with("--peers")),
            "a lone broker"
        );
    }
}
