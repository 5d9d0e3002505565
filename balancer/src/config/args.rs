//! The command line, as typed: every value optional, so the config file can fill the gaps.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use plumbing::logging::LogFormat;

use super::spec::{AdminAuth, BackendSpec, Strategy, Toggle, parse_duration};

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn backend_arg(text: &str) -> Result<BackendSpec, String> {
    text.parse().map_err(|e: ConfigError| e.to_string())
}

/// The command line, as typed. Every value is optional so the config file can fill the gaps;
/// [`Config::resolve`](super::Config::resolve) applies the defaults.
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
    /// Bearer token the admin API requires (for the routes `--admin-auth` names).
    #[arg(long, env = "BALANCER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Which admin routes need the token: `writes` (POST/DELETE /backends) or `all` (GET
    /// /metrics and /status too).
    #[arg(long, value_enum)]
    pub admin_auth: Option<AdminAuth>,
    /// Serve the admin listener on an address other machines reach without a token. Refused
    /// otherwise: anyone reaching it could add and drain backends.
    #[arg(long)]
    pub admin_insecure: bool,
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
    /// Replay requests carrying an Idempotency-Key header on another backend (default on).
    ///
    /// A request of any method with an Idempotency-Key header is sent again, head and body,
    /// to a backend not tried yet when the connection died after it was sent (and, with
    /// --retry-on-5xx, when answered 502/503), within --max-retries and the retry budget.
    /// Only bodies the balancer holds whole qualify (none, or an HTTP/1.1 Content-Length body
    /// of at most 64 KiB); a streamed body (h2, chunked, larger) is not replayed.
    #[arg(long, value_enum, value_name = "on|off")]
    pub replay_idempotency_key: Option<Toggle>,
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
