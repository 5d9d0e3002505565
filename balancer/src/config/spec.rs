//! Values as operators type them in flags and in the config file: backend specs
//! (`ADDR[,weight=N]`) and their weight limit, addresses, durations, the names of the
//! strategies and log formats, and on/off values.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;

/// Largest weight a backend may carry (keeps the weighted arithmetic far from overflow).
pub const MAX_WEIGHT: u32 = 1_000;

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

/// Which admin routes need the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminAuth {
    /// Only the routes that change the balancer (`POST`/`DELETE /backends`).
    #[default]
    Writes,
    /// Every route: `GET /metrics` and `/status` too.
    All,
}

/// A setting that is on by default, given as a flag value (`--replay-idempotency-key off`)
/// rather than as a switch, which could only turn it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// On (true works too).
    #[value(alias = "true")]
    On,
    /// Off (false works too).
    #[value(alias = "false")]
    Off,
}

impl Toggle {
    /// The setting is on.
    pub fn is_on(self) -> bool {
        self == Self::On
    }
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
