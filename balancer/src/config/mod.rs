//! Flags, the TOML file, and the validated [`Config`] the rest of the crate trusts.
//!
//! Raw inputs ([`Args`] from the command line, [`FileConfig`] from `--config`) are resolved
//! exactly once by [`Config::resolve`]: a flag wins over the file, the file wins over the
//! default. Everything after that point may assume the invariants checked by
//! [`Config::validate`] (at least one backend, weights ≥ 1, non-zero timeouts, limits within
//! what hyper accepts).
//!
//! Its parts, each building only on those before it: `error` ([`ConfigError`]), `spec`
//! (values as operators type them: backend specs, addresses, durations, strategy and log
//! format names, on/off values), `args` (the flags), `file` (the TOML file), and here the resolved settings
//! and their validation, with `resolve` (flags over file over defaults) on top.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

mod args;
mod error;
mod file;
mod resolve;
mod spec;

pub use args::Args;
pub use error::ConfigError;
pub use file::FileConfig;
pub use plumbing::logging::LogFormat;
pub use spec::{
    AdminAuth, BackendSpec, MAX_WEIGHT, Strategy, Toggle, parse_duration, resolve_addr,
};

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
    /// Replay a request that carries an `Idempotency-Key` header and whose body the
    /// balancer holds whole (bodiless, or read whole by its own HTTP/1.1 server) on another
    /// backend when its connection died after it was sent; with [`RetryConfig::on_5xx`],
    /// after a 502/503 too. The key makes the second delivery safe: the backend answers it
    /// as the first (the ticket API derives the purchase id from it).
    pub replay_idempotency_key: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            budget_ratio: 0.2,
            on_5xx: false,
            replay_idempotency_key: true,
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
    /// Bearer token for the admin routes `admin_auth` names.
    pub admin_token: Option<String>,
    /// Which admin routes need the token.
    pub admin_auth: AdminAuth,
    /// An admin listener other machines reach may run without a token.
    pub admin_insecure: bool,
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
            admin_auth: AdminAuth::default(),
            admin_insecure: false,
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
        self.validate_admin()
    }

    /// The admin listener is not left open to other machines by accident.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        let invalid =
            |name: &'static str, reason: String| Err(ConfigError::Invalid { name, reason });
        if self.admin_token.as_deref() == Some("") {
            return invalid("admin-token", "must not be empty".to_owned());
        }
        let Some(addr) = self.admin_listen else {
            return Ok(());
        };
        if self.admin_token.is_none() {
            if self.admin_auth == AdminAuth::All {
                return invalid("admin-auth", "`all` needs --admin-token".to_owned());
            }
            if !addr.ip().is_loopback() && !self.admin_insecure {
                return invalid(
                    "admin-listen",
                    format!(
                        "{addr} is reachable from other machines and no --admin-token is set: \
                         anyone reaching it could add and drain backends. Set --admin-token \
                         (or BALANCER_ADMIN_TOKEN), listen on loopback, or pass --admin-insecure"
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
