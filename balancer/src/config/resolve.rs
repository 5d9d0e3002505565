//! [`Config::resolve`]: a flag wins over the file, the file wins over the default; the result is
//! validated before anyone sees it.

use std::time::Duration;

use super::{
    Args, BackendSpec, Config, ConfigError, FileConfig, HealthConfig, Limits, PassiveConfig,
    RetryConfig, Timeouts, TlsPaths, Toggle, parse_duration, resolve_addr,
};

impl Config {
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
            admin_auth: args.admin_auth.or(file.admin_auth).unwrap_or_default(),
            admin_insecure: args.admin_insecure || file.admin_insecure.unwrap_or(false),
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
                replay_idempotency_key: args
                    .replay_idempotency_key
                    .map(Toggle::is_on)
                    .or(file.replay_idempotency_key)
                    .unwrap_or(d_retry.replay_idempotency_key),
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
}
