//! The TOML config file: the same settings as the flags, durations as strings.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use super::spec::{AdminAuth, Strategy};

/// The TOML config file: the same settings as the flags, durations as strings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`Args::listen`](super::Args::listen).
    pub listen: Option<String>,
    /// Backends as `ADDR[,weight=N]` strings.
    #[serde(default)]
    pub backends: Vec<String>,
    /// See [`Args::strategy`](super::Args::strategy).
    pub strategy: Option<Strategy>,
    /// See [`Args::health_path`](super::Args::health_path).
    pub health_path: Option<String>,
    /// See [`Args::health_interval`](super::Args::health_interval).
    pub health_interval: Option<String>,
    /// See [`Args::health_timeout`](super::Args::health_timeout).
    pub health_timeout: Option<String>,
    /// See [`Args::health_rise`](super::Args::health_rise).
    pub health_rise: Option<u32>,
    /// See [`Args::health_fall`](super::Args::health_fall).
    pub health_fall: Option<u32>,
    /// See [`Args::eject_after`](super::Args::eject_after).
    pub eject_after: Option<u32>,
    /// See [`Args::eject_for`](super::Args::eject_for).
    pub eject_for: Option<String>,
    /// See [`Args::admin_listen`](super::Args::admin_listen).
    pub admin_listen: Option<String>,
    /// See [`Args::admin_token`](super::Args::admin_token).
    pub admin_token: Option<String>,
    /// See [`Args::admin_auth`](super::Args::admin_auth).
    pub admin_auth: Option<AdminAuth>,
    /// See [`Args::admin_insecure`](super::Args::admin_insecure).
    pub admin_insecure: Option<bool>,
    /// See [`Args::tls_cert`](super::Args::tls_cert).
    pub tls_cert: Option<PathBuf>,
    /// See [`Args::tls_key`](super::Args::tls_key).
    pub tls_key: Option<PathBuf>,
    /// See [`Args::connect_timeout`](super::Args::connect_timeout).
    pub connect_timeout: Option<String>,
    /// See [`Args::upstream_timeout`](super::Args::upstream_timeout).
    pub upstream_timeout: Option<String>,
    /// See [`Args::header_timeout`](super::Args::header_timeout).
    pub header_timeout: Option<String>,
    /// See [`Args::idle_timeout`](super::Args::idle_timeout).
    pub idle_timeout: Option<String>,
    /// See [`Args::request_timeout`](super::Args::request_timeout).
    pub request_timeout: Option<String>,
    /// See [`Args::drain_timeout`](super::Args::drain_timeout).
    pub drain_timeout: Option<String>,
    /// See [`Args::max_header_bytes`](super::Args::max_header_bytes).
    pub max_header_bytes: Option<usize>,
    /// See [`Args::max_body_bytes`](super::Args::max_body_bytes).
    pub max_body_bytes: Option<u64>,
    /// See [`Args::max_connections`](super::Args::max_connections).
    pub max_connections: Option<usize>,
    /// See [`Args::max_in_flight`](super::Args::max_in_flight).
    pub max_in_flight: Option<usize>,
    /// See [`Args::max_queue`](super::Args::max_queue).
    pub max_queue: Option<usize>,
    /// See [`Args::queue_timeout`](super::Args::queue_timeout).
    pub queue_timeout: Option<String>,
    /// See [`Args::rate_limit`](super::Args::rate_limit).
    pub rate_limit: Option<f64>,
    /// See [`Args::rate_burst`](super::Args::rate_burst).
    pub rate_burst: Option<u32>,
    /// See [`Args::trust_forwarded`](super::Args::trust_forwarded).
    #[serde(default)]
    pub trust_forwarded: Vec<IpAddr>,
    /// See [`Args::max_retries`](super::Args::max_retries).
    pub max_retries: Option<u32>,
    /// See [`Args::retry_budget`](super::Args::retry_budget).
    pub retry_budget: Option<f64>,
    /// See [`Args::retry_on_5xx`](super::Args::retry_on_5xx).
    pub retry_on_5xx: Option<bool>,
    /// See [`Args::replay_idempotency_key`](super::Args::replay_idempotency_key): `true` or
    /// `false`, as the file's other on/off settings.
    pub replay_idempotency_key: Option<bool>,
    /// See [`Args::pool_max_idle`](super::Args::pool_max_idle).
    pub pool_max_idle: Option<usize>,
    /// See [`Args::workers`](super::Args::workers).
    pub workers: Option<usize>,
    /// See [`Args::access_log`](super::Args::access_log).
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
