//! Which processes a cluster runs, on which loopback ports, with which arguments: pure but for
//! finding free ports.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use super::addresses::Addresses;
use super::config::{ClusterConfig, ClusterError};
use super::process::{Kind, ProcessSpec};
use crate::credentials::StackCredentials;

/// Free ports on loopback, each held until the pool is dropped so no two are the same; the
/// processes that will listen on them start after that.
#[derive(Default)]
pub(super) struct FreePorts(Vec<TcpListener>);

impl FreePorts {
    /// A port free now and unlike any other this pool gave.
    pub(super) fn take(&mut self) -> Result<SocketAddr, ClusterError> {
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

/// What every process's arguments are made from.
#[derive(Debug, Clone)]
pub(super) struct Recipe {
    program: PathBuf,
    logs: PathBuf,
    data_dir: PathBuf,
    db: Vec<String>,
    db_replicas: Vec<String>,
    brokers: Vec<SocketAddr>,
    credentials: StackCredentials,
    login_sender: String,
}

impl Recipe {
    /// Every broker's address, comma-separated, as the APIs and workers take them.
    pub(super) fn broker_list(&self) -> String {
        self.brokers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spec(
        &self,
        kind: Kind,
        index: usize,
        listen: SocketAddr,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> ProcessSpec {
        let address = match kind {
            Kind::Broker => listen.to_string(),
            Kind::Worker => format!("http://{listen}/metrics"),
            Kind::Api | Kind::Balancer => format!("http://{listen}"),
        };
        ProcessSpec {
            kind,
            index,
            program: self.program.clone(),
            args,
            env,
            log: self.logs.join(format!("{}-{index}.log", kind.name())),
            address,
            listen: (kind != Kind::Worker).then_some(listen),
        }
    }

    /// The store's URL goes in the environment, never on a command line (`ps` shows those).
    /// Several URLs (shards) go comma-separated, which `ticket-svc` splits again.
    fn db_env(&self) -> Vec<(String, String)> {
        vec![("TICKET_DB".to_owned(), self.db.join(","))]
    }

    /// Broker node `n` (from 1) of the cluster, on `addr`.
    fn broker(&self, n: usize, addr: SocketAddr, metrics: SocketAddr) -> ProcessSpec {
        let mut args = vec![
            "broker".into(),
            "serve".into(),
            format!("--listen={addr}"),
            format!("--metrics-listen={metrics}"),
            format!(
                "--data-dir={}",
                self.data_dir.join(format!("broker-{n}")).display()
            ),
        ];
        if self.brokers.len() > 1 {
            let peers = self
                .brokers
                .iter()
                .enumerate()
                .map(|(i, b)| format!("{}={b}", i + 1))
                .collect::<Vec<_>>()
                .join(",");
            args.push(format!("--node-id={n}"));
            args.push(format!("--peers={peers}"));
        }
        self.spec(Kind::Broker, n, addr, args, Vec::new())
    }

    /// Worker process `n`, serving its metrics on `metrics`.
    pub(super) fn worker(&self, n: usize, metrics: SocketAddr) -> ProcessSpec {
        let args = vec![
            "worker".into(),
            format!("--broker={}", self.broker_list()),
            format!("--metrics-listen={metrics}"),
        ];
        self.spec(Kind::Worker, n, metrics, args, self.db_env())
    }

    /// API `n`, on `addr`, serving its metrics on `metrics` (with the read replicas, which
    /// only APIs use). Its signing key and organizer token go in the environment, like the
    /// store's URL.
    pub(super) fn api(&self, n: usize, addr: SocketAddr, metrics: SocketAddr) -> ProcessSpec {
        let args = vec![
            "api".into(),
            format!("--listen={addr}"),
            format!("--metrics-listen={metrics}"),
            format!("--broker={}", self.broker_list()),
            format!("--login-sender={}", self.login_sender),
        ];
        let mut env = self.db_env();
        if !self.db_replicas.is_empty() {
            env.push(("TICKET_DB_REPLICA".to_owned(), self.db_replicas.join(",")));
        }
        env.push((
            "TICKET_SIGNING_KEYS".to_owned(),
            self.credentials.signing_key.clone(),
        ));
        env.push((
            "TICKET_ORGANIZER_TOKENS".to_owned(),
            self.credentials.organizer_token.clone(),
        ));
        self.spec(Kind::Api, n, addr, args, env)
    }

    /// Balancer `n`, in front of `apis`.
    fn balancer(
        &self,
        n: usize,
        public: SocketAddr,
        admin: SocketAddr,
        apis: &[SocketAddr],
    ) -> ProcessSpec {
        let mut args = vec![
            "balancer".into(),
            format!("--listen={public}"),
            format!("--admin-listen={admin}"),
            "--strategy=least-conn".into(),
        ];
        args.extend(apis.iter().map(|api| format!("--backend={api}")));
        self.spec(Kind::Balancer, n, public, args, Vec::new())
    }
}

/// The processes' specs, the addresses they will listen on, and the recipe that makes more
/// (the API autoscaler's).
pub(super) fn plan(
    config: &ClusterConfig,
    logs: &std::path::Path,
    credentials: &StackCredentials,
) -> Result<(Vec<ProcessSpec>, Addresses, Recipe), ClusterError> {
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
        a.api_metrics.push(ports.take()?);
    }
    for k in 0..config.balancers {
        a.public.push(ports.numbered(config.listen, k)?);
        a.admin.push(ports.numbered(config.admin_listen, k)?);
    }
    let recipe = Recipe {
        program: config.program.clone(),
        logs: logs.to_path_buf(),
        data_dir: config.data_dir.clone(),
        db: config.db.clone(),
        db_replicas: config.db_replicas.clone(),
        brokers: a.brokers.clone(),
        credentials: credentials.clone(),
        login_sender: config.login_sender.clone(),
    };
    let mut specs = Vec::new();
    for (i, (addr, metrics)) in a.brokers.iter().zip(&a.broker_metrics).enumerate() {
        specs.push(recipe.broker(i + 1, *addr, *metrics));
    }
    for (i, metrics) in a.worker_metrics.iter().enumerate() {
        specs.push(recipe.worker(i + 1, *metrics));
    }
    for (i, (addr, metrics)) in a.apis.iter().zip(&a.api_metrics).enumerate() {
        specs.push(recipe.api(i + 1, *addr, *metrics));
    }
    for (i, (public, admin)) in a.public.iter().zip(&a.admin).enumerate() {
        specs.push(recipe.balancer(i + 1, *public, *admin, &a.apis));
    }
    Ok((specs, a, recipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig::new("ticket-svc", "data", &["postgres://u@127.0.0.1/db".into()])
    }

    fn credentials() -> StackCredentials {
        StackCredentials {
            signing_key: "k:0123456789abcdef0123456789abcdef".into(),
            organizer_token: "organizer-token-0123456789".into(),
            organizer_token_file: "data/organizer-token".into(),
        }
    }

    #[test]
    fn the_plan_wires_every_process_to_the_others() {
        let dir = std::path::Path::new("logs");
        let (specs, a, _) = plan(&config(), dir, &credentials()).unwrap();
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
                        s.env[0],
                        ("TICKET_DB".into(), config().db.join(",")),
                        "the URL stays out of ps"
                    );
                    assert!(!args.contains("postgres"));
                    // The APIs' secrets too, and only the APIs have them.
                    let secrets = s
                        .env
                        .iter()
                        .filter(|(k, v)| {
                            (k == "TICKET_SIGNING_KEYS" && *v == credentials().signing_key)
                                || (k == "TICKET_ORGANIZER_TOKENS"
                                    && *v == credentials().organizer_token)
                        })
                        .count();
                    assert_eq!(secrets, if s.kind == Kind::Api { 2 } else { 0 });
                    assert!(!args.contains("0123456789abcdef"));
                    if s.kind == Kind::Api {
                        assert!(
                            args.contains(&format!(
                                "--metrics-listen={}",
                                a.api_metrics[s.index - 1]
                            ))
                        );
                    }
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
        let mut replicated = config();
        replicated.db_replicas = vec!["postgres://u@127.0.0.1/replica".into()];
        let (specs, _, _) = plan(&replicated, dir, &credentials()).unwrap();
        for s in &specs {
            let has_replica = s
                .env
                .iter()
                .any(|(k, v)| k == "TICKET_DB_REPLICA" && v.ends_with("/replica"));
            assert_eq!(
                has_replica,
                s.kind == Kind::Api,
                "only APIs read purchases: {s:?}"
            );
        }
        let mut one = config();
        one.brokers = 1;
        let (specs, _, _) = plan(&one, dir, &credentials()).unwrap();
        assert!(
            !specs[0].args.iter().any(|a| a.starts_with("--peers")),
            "a lone broker"
        );
    }
}
