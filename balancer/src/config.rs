//! Flags, the TOML file, and the validated [`Config`] the rest of the crate trusts.
//!
//! Raw inputs ([`Args`] from the command line, [`FileConfig`] from `--config`) are resolved
//! exactly once by [`Config::resolve`]: a flag wins over the file, the file wins over the
//! default. Everything after that point may assume the invariants checked by
//! [`Config::validate`] (at least one backend, weights ≥ 1, non-zero timeouts, limits within
//! what hyper accepts).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Default time allowed to open a TCP connection to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time allowed for a backend to send response headers.
pub const DEFAULT_UPSTREAM_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a client has to send a full request head (also bounds keep-alive idle time).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Default idle time for pooled upstream connections and stalled bodies.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time from request arrival to response headers, queueing and retries included.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time in-flight requests get to finish after SIGTERM or a backend removal.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest wait in a backend's queue.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head (request line + headers).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest head limit hyper accepts for its read buffer.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Default largest request body.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default largest number of open downstream connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest weight a backend may carry (keeps the weighted arithmetic far from overflow).
pub const MAX_WEIGHT: u32 = 1_000;

/// Errors found while reading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A backend spec is not `ADDR[,weight=N]`.
    #[error("invalid backend {spec:?}: {reason}")]
    Backend {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration is not `<number><ms|s|m|h>`.
    #[error("invalid duration {0:?} (expected e.g. 500ms, 2s, 1m)")]
    Duration(String),
    /// An address does not parse or resolve.
    #[error("invalid address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The TOML error.
        source: toml::de::Error,
    },
    /// A value is out of range or settings contradict each other.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting (flag name without dashes).
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

/// Backend selection strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Smooth weighted round-robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Fewest in-flight requests relative to weight; ties rotate.
    LeastConn,
    /// Power of two random choices over in-flight requests.
    P2c,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One backend: where it is and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    /// The backend's socket address.
    pub addr: SocketAddr,
    /// Relative share of traffic, 1..=[`MAX_WEIGHT`].
    pub weight: u32,
}

impl BackendSpec {
    /// A backend with weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, weight: 1 }
    }

    /// The same backend with another weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

impl FromStr for BackendSpec {
    type Err = ConfigError;

    /// Parses `ADDR[,weight=N]`; `ADDR` is `host:port` and is resolved here (once).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ConfigError::Backend {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = spec.split(',');
        let addr_text = parts.next().map(str::trim).unwrap_or_default();
        if addr_text.is_empty() {
            return Err(bad("missing address"));
        }
        let addr = resolve_addr(addr_text).map_err(|e| bad(&e.to_string()))?;
        let mut weight = 1;
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad("options are key=value"))?;
            match key.trim() {
                "weight" => {
                    weight = value
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| bad("weight is not a whole number"))?;
                    if weight == 0 || weight > MAX_WEIGHT {
                        return Err(bad(&format!("weight must be 1..={MAX_WEIGHT}")));
                    }
                }
                other => return Err(bad(&format!("unknown option {other:?}"))),
            }
        }
        Ok(Self { addr, weight })
    }
}

impl std::fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},weight={}", self.addr, self.weight)
    }
}

/// Resolves `host:port` to its first socket address.
pub fn resolve_addr(text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |reason: String| ConfigError::Address {
        addr: text.to_owned(),
        reason,
    };
    let mut addrs = text.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("resolves to nothing".to_owned()))
}

/// Parses `250ms`, `2s`, `1m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let bad = || ConfigError::Duration(text.to_owned());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn backend_arg(text: &str) -> Result<BackendSpec, String> {
    text.parse().map_err(|e: ConfigError| e.to_string())
}

/// The command line, as typed. Every value is optional so the config file can fill the gaps;
/// [`Config::resolve`] applies the defaults.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "balancer",
    version,
    about = "Layer-7 HTTP load balancer for the ticket API"
)]
pub struct Args {
    /// Address to accept client traffic on (default 127.0.0.1:8080).
    #[arg(long, env = "BALANCER_LISTEN")]
    pub listen: Option<String>,
    /// A backend, `ADDR[,weight=N]`; repeat for more.
    #[arg(long = "backend", value_parser = backend_arg)]
    pub backends: Vec<BackendSpec>,
    /// How to pick a backend.
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// Path the active health check GETs on each backend.
    #[arg(long)]
    pub health_path: Option<String>,
    /// Time between active health checks (e.g. 1s).
    #[arg(long, value_parser = duration_arg)]
    pub health_interval: Option<Duration>,
    /// Time a health check may take.
    #[arg(long, value_parser = duration_arg)]
    pub health_timeout: Option<Duration>,
    /// Consecutive passing checks that bring a backend up.
    #[arg(long)]
    pub health_rise: Option<u32>,
    /// Consecutive failing checks that take a backend down.
    #[arg(long)]
    pub health_fall: Option<u32>,
    /// Consecutive connect failures or 5xx answers that eject a backend (0 = never).
    #[arg(long)]
    pub eject_after: Option<u32>,
    /// How long an ejected backend gets no traffic.
    #[arg(long, value_parser = duration_arg)]
    pub eject_for: Option<Duration>,
    /// Admin listener (metrics, status, backends API); 127.0.0.1:9080 by default.
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Turn the admin listener off.
    #[arg(long)]
    pub no_admin: bool,
    /// Bearer token the admin API requires (GET /metrics and /status stay open).
    #[arg(long, env = "BALANCER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PEM certificate chain for TLS termination.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS termination.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TOML file with the same settings; reloaded on SIGHUP. Flags win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Time to connect to a backend.
    #[arg(long, value_parser = duration_arg)]
    pub connect_timeout: Option<Duration>,
    /// Time a backend has to send response headers.
    #[arg(long, value_parser = duration_arg)]
    pub upstream_timeout: Option<Duration>,
    /// Time a client has to send a request head; also the keep-alive idle limit.
    #[arg(long, value_parser = duration_arg)]
    pub header_timeout: Option<Duration>,
    /// Idle time for pooled upstream connections and stalled bodies.
    #[arg(long, value_parser = duration_arg)]
    pub idle_timeout: Option<Duration>,
    /// Time from request arrival to response headers (queueing and retries included).
    #[arg(long, value_parser = duration_arg)]
    pub request_timeout: Option<Duration>,
    /// Time in-flight requests get to finish on SIGTERM.
    #[arg(long, value_parser = duration_arg)]
    pub drain_timeout: Option<Duration>,
    /// Largest request head in bytes (431 above it; at least 8192).
    #[arg(long)]
    pub max_header_bytes: Option<usize>,
    /// Largest request body in bytes (413 above it).
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
    /// Most open client connections.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Most concurrent requests per backend (0 = unlimited); the rest wait in a FIFO queue.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Longest FIFO wait queue per backend; 503 + Retry-After beyond it.
    #[arg(long)]
    pub max_queue: Option<usize>,
    /// Longest wait in a backend's queue.
    #[arg(long, value_parser = duration_arg)]
    pub queue_timeout: Option<Duration>,
    /// Requests per second per client IP (0 = no rate limit).
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Burst size of the per-client token bucket.
    #[arg(long)]
    pub rate_burst: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed for the rate-limit key (comma separated IPs).
    #[arg(long, value_delimiter = ',')]
    pub trust_forwarded: Vec<IpAddr>,
    /// Retries on another backend for requests that never reached one.
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Retries allowed as a fraction of recent requests (retry budget).
    #[arg(long)]
    pub retry_budget: Option<f64>,
    /// Also retry idempotent, bodiless requests answered 502/503.
    #[arg(long)]
    pub retry_on_5xx: bool,
    /// Most idle pooled connections per backend (per worker).
    #[arg(long)]
    pub pool_max_idle: Option<usize>,
    /// Worker threads, each a single-threaded runtime with its own listener (default: cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seed for the p2c random choice (reproducible runs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Log one line per request.
    #[arg(long)]
    pub access_log: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The TOML config file: the same settings as the flags, durations as strings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`Args::listen`].
    pub listen: Option<String>,
    /// Backends as `ADDR[,weight=N]` strings.
    #[serde(default)]
    pub backends: Vec<String>,
    /// See [`Args::strategy`].
    pub strategy: Option<Strategy>,
    /// See [`Args::health_path`].
    pub health_path: Option<String>,
    /// See [`Args::health_interval`].
    pub health_interval: Option<String>,
    /// See [`Args::health_timeout`].
    pub health_timeout: Option<String>,
    /// See [`Args::health_rise`].
    pub health_rise: Option<u32>,
    /// See [`Args::health_fall`].
    pub health_fall: Option<u32>,
    /// See [`Args::eject_after`].
    pub eject_after: Option<u32>,
    /// See [`Args::eject_for`].
    pub eject_for: Option<String>,
    /// See [`Args::admin_listen`].
    pub admin_listen: Option<String>,
    /// See [`Args::admin_token`].
    pub admin_token: Option<String>,
    /// See [`Args::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`Args::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`Args::connect_timeout`].
    pub connect_timeout: Option<String>,
    /// See [`Args::upstream_timeout`].
    pub upstream_timeout: Option<String>,
    /// See [`Args::header_timeout`].
    pub header_timeout: Option<String>,
    /// See [`Args::idle_timeout`].
    pub idle_timeout: Option<String>,
    /// See [`Args::request_timeout`].
    pub request_timeout: Option<String>,
    /// See [`Args::drain_timeout`].
    pub drain_timeout: Option<String>,
    /// See [`Args::max_header_bytes`].
    pub max_header_bytes: Option<usize>,
    /// See [`Args::max_body_bytes`].
    pub max_body_bytes: Option<u64>,
    /// See [`Args::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`Args::max_in_flight`].
    pub max_in_flight: Option<usize>,
    /// See [`Args::max_queue`].
    pub max_queue: Option<usize>,
    /// See [`Args::queue_timeout`].
    pub queue_timeout: Option<String>,
    /// See [`Args::rate_limit`].
    pub rate_limit: Option<f64>,
    /// See [`Args::rate_burst`].
    pub rate_burst: Option<u32>,
    /// See [`Args::trust_forwarded`].
    #[serde(default)]
    pub trust_forwarded: Vec<IpAddr>,
    /// See [`Args::max_retries`].
    pub max_retries: Option<u32>,
    /// See [`Args::retry_budget`].
    pub retry_budget: Option<f64>,
    /// See [`Args::retry_on_5xx`].
    pub retry_on_5xx: Option<bool>,
    /// See [`Args::pool_max_idle`].
    pub pool_max_idle: Option<usize>,
    /// See [`Args::workers`].
    pub workers: Option<usize>,
    /// See [`Args::access_log`].
    pub access_log: Option<bool>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
            path: path.to_owned(),
            source,
        })
    }
}

/// Active health checking.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Path to GET; a 2xx or 3xx answer passes.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive passes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: "/healthz".to_owned(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
        }
    }
}

/// Timeouts, each a deadline on one network wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// Backend response headers after the request was sent.
    pub upstream_header: Duration,
    /// Client request head (slowloris); also the keep-alive idle limit.
    pub header_read: Duration,
    /// Idle pooled upstream connections; no body bytes for this long aborts the stream.
    pub idle: Duration,
    /// Arrival to response headers, including queueing and retries.
    pub total: Duration,
    /// Draining on shutdown and backend removal.
    pub drain: Duration,
    /// Wait in a backend's FIFO queue.
    pub queue: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            upstream_header: DEFAULT_UPSTREAM_HEADER_TIMEOUT,
            header_read: DEFAULT_HEADER_READ_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            total: DEFAULT_TOTAL_TIMEOUT,
            drain: DEFAULT_DRAIN_TIMEOUT,
            queue: DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

/// Size and count limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request head in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Largest request body in bytes (413 above it).
    pub max_body_bytes: u64,
    /// Most open client connections.
    pub max_connections: usize,
    /// Most concurrent requests per backend; 0 = unlimited.
    pub max_in_flight_per_backend: usize,
    /// Longest FIFO queue per backend.
    pub max_queue_per_backend: usize,
    /// Per-client requests per second; 0 = off.
    pub rate_per_sec: f64,
    /// Per-client burst.
    pub rate_burst: u32,
    /// Proxies whose X-Forwarded-For names the client for rate limiting.
    pub trust_forwarded: Vec<IpAddr>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight_per_backend: 0,
            max_queue_per_backend: 1_000,
            rate_per_sec: 0.0,
            rate_burst: 20,
            trust_forwarded: Vec::new(),
        }
    }
}

/// Retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Extra attempts after the first, each on a backend not tried yet.
    pub max_retries: u32,
    /// Retries allowed as a fraction of requests (e.g. 0.2 = one retry per five requests).
    pub budget_ratio: f64,
    /// Retry idempotent, bodiless requests answered 502/503.
    pub on_5xx: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            budget_ratio: 0.2,
            on_5xx: false,
        }
    }
}

/// Passive health: eject a backend after consecutive failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassiveConfig {
    /// Consecutive connect failures or 5xx answers before ejection; 0 = never eject.
    pub failures: u32,
    /// How long an ejection lasts.
    pub eject_for: Duration,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            failures: 3,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// TLS certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The validated configuration. Build it with [`Config::new`] (library callers) or
/// [`Config::resolve`] (the binary), then [`Config::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Client-facing listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Backends and weights.
    pub backends: Vec<BackendSpec>,
    /// Selection strategy.
    pub strategy: Strategy,
    /// Active health checks.
    pub health: HealthConfig,
    /// Passive ejection.
    pub passive: PassiveConfig,
    /// Admin listener; `None` turns it off.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for the mutating admin routes.
    pub admin_token: Option<String>,
    /// TLS termination; `None` serves plain HTTP (and h2c).
    pub tls: Option<TlsPaths>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
    /// Retries.
    pub retry: RetryConfig,
    /// Most idle pooled connections per backend per worker.
    pub pool_max_idle: usize,
    /// Worker threads (each a current-thread runtime with its own SO_REUSEPORT listener).
    pub workers: usize,
    /// Seed for p2c; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Log one line per request at INFO on target `balancer::access`.
    pub access_log: bool,
}

impl Config {
    /// A config with defaults for everything but the listen address and the backends.
    /// The admin listener is off; set `admin_listen` to turn it on.
    pub fn new(listen: SocketAddr, backends: Vec<BackendSpec>) -> Self {
        Self {
            listen,
            backends,
            strategy: Strategy::default(),
            health: HealthConfig::default(),
            passive: PassiveConfig::default(),
            admin_listen: None,
            admin_token: None,
            tls: None,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            retry: RetryConfig::default(),
            pool_max_idle: 64,
            workers: 1,
            seed: None,
            access_log: false,
        }
    }

    /// Merges flags over the file over defaults, then validates.
    pub fn resolve(args: &Args, file: Option<&FileConfig>) -> Result<Self, ConfigError> {
        let empty = FileConfig::default();
        let file = file.unwrap_or(&empty);
        let dur = |flag: Option<Duration>,
                   text: &Option<String>,
                   default: Duration|
         -> Result<Duration, ConfigError> {
            match (flag, text) {
                (Some(d), _) => Ok(d),
                (None, Some(t)) => parse_duration(t),
                (None, None) => Ok(default),
            }
        };
        let listen_text = args
            .listen
            .clone()
            .or_else(|| file.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = resolve_addr(&listen_text)?;
        let backends = if args.backends.is_empty() {
            file.backends
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<BackendSpec>, _>>()?
        } else {
            args.backends.clone()
        };
        let admin_listen = if args.no_admin {
            None
        } else {
            let text = args
                .admin_listen
                .clone()
                .or_else(|| file.admin_listen.clone())
                .unwrap_or_else(|| "127.0.0.1:9080".to_owned());
            Some(resolve_addr(&text)?)
        };
        let tls = match (
            args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
            args.tls_key.clone().or_else(|| file.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some(TlsPaths { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "tls-cert",
                    reason: "--tls-cert and --tls-key go together".to_owned(),
                });
            }
        };
        let d_health = HealthConfig::default();
        let d_passive = PassiveConfig::default();
        let d_time = Timeouts::default();
        let d_limits = Limits::default();
        let d_retry = RetryConfig::default();
        let mut trust = args.trust_forwarded.clone();
        if trust.is_empty() {
            trust = file.trust_forwarded.clone();
        }
        let config = Self {
            listen,
            backends,
            strategy: args.strategy.or(file.strategy).unwrap_or_default(),
            health: HealthConfig {
                path: args
                    .health_path
                    .clone()
                    .or_else(|| file.health_path.clone())
                    .unwrap_or(d_health.path),
                interval: dur(
                    args.health_interval,
                    &file.health_interval,
                    d_health.interval,
                )?,
                timeout: dur(args.health_timeout, &file.health_timeout, d_health.timeout)?,
                rise: args
                    .health_rise
                    .or(file.health_rise)
                    .unwrap_or(d_health.rise),
                fall: args
                    .health_fall
                    .or(file.health_fall)
                    .unwrap_or(d_health.fall),
            },
            passive: PassiveConfig {
                failures: args
                    .eject_after
                    .or(file.eject_after)
                    .unwrap_or(d_passive.failures),
                eject_for: dur(args.eject_for, &file.eject_for, d_passive.eject_for)?,
            },
            admin_listen,
            admin_token: args
                .admin_token
                .clone()
                .or_else(|| file.admin_token.clone()),
            tls,
            timeouts: Timeouts {
                connect: dur(args.connect_timeout, &file.connect_timeout, d_time.connect)?,
                upstream_header: dur(
                    args.upstream_timeout,
                    &file.upstream_timeout,
                    d_time.upstream_header,
                )?,
                header_read: dur(
                    args.header_timeout,
                    &file.header_timeout,
                    d_time.header_read,
                )?,
                idle: dur(args.idle_timeout, &file.idle_timeout, d_time.idle)?,
                total: dur(args.request_timeout, &file.request_timeout, d_time.total)?,
                drain: dur(args.drain_timeout, &file.drain_timeout, d_time.drain)?,
                queue: dur(args.queue_timeout, &file.queue_timeout, d_time.queue)?,
            },
            limits: Limits {
                max_header_bytes: args
                    .max_header_bytes
                    .or(file.max_header_bytes)
                    .unwrap_or(d_limits.max_header_bytes),
                max_body_bytes: args
                    .max_body_bytes
                    .or(file.max_body_bytes)
                    .unwrap_or(d_limits.max_body_bytes),
                max_connections: args
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(d_limits.max_connections),
                max_in_flight_per_backend: args
                    .max_in_flight
                    .or(file.max_in_flight)
                    .unwrap_or(d_limits.max_in_flight_per_backend),
                max_queue_per_backend: args
                    .max_queue
                    .or(file.max_queue)
                    .unwrap_or(d_limits.max_queue_per_backend),
                rate_per_sec: args
                    .rate_limit
                    .or(file.rate_limit)
                    .unwrap_or(d_limits.rate_per_sec),
                rate_burst: args
                    .rate_burst
                    .or(file.rate_burst)
                    .unwrap_or(d_limits.rate_burst),
                trust_forwarded: trust,
            },
            retry: RetryConfig {
                max_retries: args
                    .max_retries
                    .or(file.max_retries)
                    .unwrap_or(d_retry.max_retries),
                budget_ratio: args
                    .retry_budget
                    .or(file.retry_budget)
                    .unwrap_or(d_retry.budget_ratio),
                on_5xx: args.retry_on_5xx || file.retry_on_5xx.unwrap_or(false),
            },
            pool_max_idle: args.pool_max_idle.or(file.pool_max_idle).unwrap_or(64),
            workers: args
                .workers
                .or(file.workers)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            seed: args.seed,
            access_log: args.access_log || file.access_log.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants the rest of the crate relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                name,
                reason: reason.to_owned(),
            })
        };
        if self.backends.is_empty() {
            return invalid("backend", "at least one --backend is required");
        }
        let mut seen = std::collections::HashSet::new();
        for b in &self.backends {
            if b.weight == 0 || b.weight > MAX_WEIGHT {
                return invalid(
                    "backend",
                    &format!("weight of {} must be 1..={MAX_WEIGHT}", b.addr),
                );
            }
            if !seen.insert(b.addr) {
                return invalid("backend", &format!("{} is listed twice", b.addr));
            }
        }
        if !self.health.path.starts_with('/') {
            return invalid("health-path", "must start with /");
        }
        if self.health.rise == 0 || self.health.fall == 0 {
            return invalid("health-rise", "rise and fall must be at least 1");
        }
        let t = &self.timeouts;
        for (name, d) in [
            ("health-interval", self.health.interval),
            ("health-timeout", self.health.timeout),
            ("connect-timeout", t.connect),
            ("upstream-timeout", t.upstream_header),
            ("header-timeout", t.header_read),
            ("idle-timeout", t.idle),
            ("request-timeout", t.total),
            ("queue-timeout", t.queue),
        ] {
            if d.is_zero() {
                return invalid(name, "must be more than zero");
            }
        }
        if self.limits.max_header_bytes < MIN_MAX_HEADER_BYTES {
            return invalid(
                "max-header-bytes",
                &format!("must be at least {MIN_MAX_HEADER_BYTES}"),
            );
        }
        if self.limits.max_connections == 0 {
            return invalid("max-connections", "must be at least 1");
        }
        if !(self.limits.rate_per_sec >= 0.0 && self.limits.rate_per_sec.is_finite()) {
            return invalid("rate-limit", "must be a finite number ≥ 0");
        }
        if self.limits.rate_per_sec > 0.0 && self.limits.rate_burst == 0 {
            return invalid("rate-burst", "must be at least 1 when rate limiting");
        }
        if !(0.0..=10.0).contains(&self.retry.budget_ratio) {
            return invalid("retry-budget", "must be between 0 and 10");
        }
        if self.workers == 0 || self.workers > 256 {
            return invalid("workers", "must be 1..=256");
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
