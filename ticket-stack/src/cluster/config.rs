//! What a cluster is made of, and why one could not start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ticket_svc::config_error::ConfigError;

use crate::supervisor::ScalingConfig;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `ticket-svc` binary every process runs (usually this one).
    pub program: PathBuf,
    /// The brokers' logs and every process's output live here.
    pub data_dir: PathBuf,
    /// The store: a `postgres://` URL (every API and worker process shares it).
    pub db: Vec<String>,
    /// Read replicas of those databases, the i-th for the i-th (`ticket-svc api --db-replica`).
    pub db_replicas: Vec<String>,
    /// Balancers, each in front of every API.
    pub balancers: usize,
    /// API processes at the start, and at least.
    pub apis: usize,
    /// API processes at most: above `apis`, the API autoscaler adds one while the APIs stay
    /// busy and removes it when they are idle again ([`autoscale`]).
    pub max_apis: usize,
    /// Requests in flight or queued per API (over every balancer) above which an API is added;
    /// one is removed at an eighth of it or less.
    pub api_busy: u64,
    /// How often the API and worker autoscalers check; each acts after 3 checks in a row past
    /// a threshold.
    pub scale_check_every: Duration,
    /// Broker nodes: 1, or 3 or 5 as a replicated cluster.
    pub brokers: usize,
    /// Worker processes at the start, and at least.
    pub workers: usize,
    /// Worker processes at most: above `workers`, one more is started while more than
    /// `scale_up_lag` purchases stay queued, one stopped while 5% of that or fewer are, never
    /// more than the partitions with purchases queued ([`crate::supervisor`]'s rule).
    pub max_workers: usize,
    /// Queued purchases above which a worker process is added.
    pub scale_up_lag: u64,
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
    /// Where the APIs send login codes: `log` or a webhook URL (`api --login-sender`).
    pub login_sender: String,
}

impl ClusterConfig {
    /// Two balancers (public 127.0.0.1:8080 and :8081, admin :9080 and :9081), three APIs, three
    /// brokers, two workers, the runner's status on 127.0.0.1:9079; 15 s to drain, 60 s to come
    /// up.
    pub fn new(program: impl Into<PathBuf>, data_dir: impl Into<PathBuf>, db: &[String]) -> Self {
        Self {
            program: program.into(),
            data_dir: data_dir.into(),
            db: db.to_vec(),
            db_replicas: Vec::new(),
            balancers: 2,
            apis: 3,
            max_apis: 3,
            api_busy: 32,
            scale_check_every: Duration::from_secs(1),
            brokers: 3,
            workers: 2,
            max_workers: 2,
            scale_up_lag: 1000,
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9080).into(),
            status_listen: Some(([127, 0, 0, 1], 9079).into()),
            drain_grace: Duration::from_secs(15),
            ready_within: Duration::from_secs(60),
            login_sender: "log".into(),
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
            (self.apis..=16).contains(&self.max_apis),
            "ClusterConfig::max_apis",
            "must be apis to 16",
        )?;
        ConfigError::check(
            (self.workers..=16).contains(&self.max_workers),
            "ClusterConfig::max_workers",
            "must be workers to 16",
        )?;
        self.worker_scaling().validate()?;
        ConfigError::check(
            self.api_busy > 0,
            "ClusterConfig::api_busy",
            "must be at least 1",
        )?;
        self.api_scaling().validate()?;
        ConfigError::check(
            matches!(self.brokers, 1 | 3 | 5),
            "ClusterConfig::brokers",
            "must be 1, 3 or 5",
        )?;
        ConfigError::check(
            !self.db.is_empty()
                && self
                    .db
                    .iter()
                    .all(|u| ticket_svc::store::is_postgres_url(u)),
            "ClusterConfig::db",
            "must be postgres:// URLs (one, or one per shard): the processes of a cluster share \
             the database",
        )?;
        ConfigError::check(
            self.db_replicas.len() <= self.db.len()
                && self
                    .db_replicas
                    .iter()
                    .all(|u| ticket_svc::store::is_postgres_url(u)),
            "ClusterConfig::db_replicas",
            "must be postgres:// URLs, at most one per database",
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

impl ClusterConfig {
    /// The API autoscaler's thresholds: `apis` to `max_apis`, add above `api_busy` requests per
    /// API, remove at an eighth of it, after 3 checks.
    pub(super) fn api_scaling(&self) -> ScalingConfig {
        let mut s = ScalingConfig::new(self.apis, self.max_apis);
        s.scale_up_lag = self.api_busy;
        s.scale_down_lag = self.api_busy / 8;
        s.every = self.scale_check_every;
        s
    }

    /// The worker autoscaler's thresholds: `workers` to `max_workers`, add above `scale_up_lag`
    /// queued, remove at 5% of it, after 3 checks.
    pub(super) fn worker_scaling(&self) -> ScalingConfig {
        let mut s = ScalingConfig::new(self.workers, self.max_workers);
        s.scale_up_lag = self.scale_up_lag;
        s.scale_down_lag = self.scale_up_lag / 20;
        s.every = self.scale_check_every;
        s
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
    /// The APIs' credentials could not be read or made under the data dir.
    #[error("credentials: {0}")]
    Credentials(String),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig::new("ticket-svc", "data", &["postgres://u@127.0.0.1/db".into()])
    }

    #[test]
    fn the_defaults_validate_and_each_range_is_checked() {
        ticket_svc::testing::assert_each_refused(
            &config(),
            ClusterConfig::validate,
            &[
                ("ClusterConfig::balancers", |c| c.balancers = 0),
                ("ClusterConfig::apis", |c| c.apis = 17),
                ("ClusterConfig::max_apis", |c| c.max_apis = 2),
                ("ClusterConfig::max_workers", |c| c.max_workers = 1),
                ("ClusterConfig::api_busy", |c| c.api_busy = 0),
                ("ScalingConfig::every", |c| {
                    c.scale_check_every = Duration::ZERO
                }),
                ("ClusterConfig::workers", |c| c.workers = 0),
                ("ClusterConfig::brokers", |c| c.brokers = 2),
                ("ClusterConfig::db", |c| c.db = vec!["sqlite://x.db".into()]),
                ("ClusterConfig::db", |c| c.db.clear()),
                ("ClusterConfig::db_replicas", |c| {
                    c.db_replicas = vec!["postgres://h/r0".into(), "postgres://h/r1".into()];
                }),
                ("ClusterConfig::db_replicas", |c| {
                    c.db_replicas = vec!["sqlite://r.db".into()];
                }),
                ("ClusterConfig::db", |c| {
                    c.db = vec!["postgres://h/a".into(), "sqlite://b.db".into()];
                }),
                ("ClusterConfig::listen", |c| {
                    c.listen = ([127, 0, 0, 1], u16::MAX).into();
                }),
            ],
        );
    }
}
