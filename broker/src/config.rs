//! The broker's validated configuration. `main` turns flags into this once; the rest of the
//! crate trusts it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME_BYTES;

/// When appended bytes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before a produce is acknowledged; concurrent produces share one sync
    /// (group commit). Nothing acknowledged is lost on a crash or power cut.
    Always,
    /// `fdatasync` at this interval; a produce is acknowledged when written to the page cache.
    /// A power cut or kernel crash loses up to one interval; a killed process loses nothing.
    Interval(Duration),
    /// Never sync explicitly; the kernel writes back when it likes (about 30 s on Linux).
    /// A killed process loses nothing; a power cut may lose anything not yet written back.
    Never,
}

impl FsyncPolicy {
    /// Parses `always`, `never`, `interval` (100 ms) or `interval:DURATION` (e.g. `interval:50ms`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            "interval" => Ok(Self::Interval(Duration::from_millis(100))),
            other => match other.strip_prefix("interval:") {
                Some(d) => parse_duration(d).map(Self::Interval),
                None => Err(format!(
                    "unknown fsync policy {other:?}: expected always, interval, interval:DURATION or never"
                )),
            },
        }
    }

    /// Metric/log name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Interval(_) => "interval",
            Self::Never => "never",
        }
    }
}

/// Parses `250ms`, `2s`, `5m`, `1h` or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 250ms, 2s, 5m, 1h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }
    .ok_or_else(|| format!("bad duration {s:?}: expected e.g. 250ms, 2s, 5m, 1h"))?;
    Ok(Duration::from_millis(ms))
}

/// Parses `512KiB`, `64MiB`, `1GiB`, `1000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?}: expected e.g. 512KiB, 64MiB, 1GiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        "TiB" | "T" | "TB" => 1 << 40,
        _ => return Err(format!("bad size {s:?}: expected e.g. 512KiB, 64MiB, 1GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Everything the broker needs to run.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where `/metrics` is served; `None` for no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Root of topics and groups.
    pub data_dir: PathBuf,
    /// Durability of produces and acknowledgements.
    pub fsync: FsyncPolicy,
    /// Shared secret clients must present in Hello; `None` for none.
    pub token: Option<String>,
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
    /// Segment roll size.
    pub segment_bytes: u64,
    /// Default retention by size per partition (0 = unlimited).
    pub retention_bytes: u64,
    /// Default retention by age (zero = unlimited).
    pub retention: Duration,
    /// Delete by retention even segments that a group has not consumed.
    pub retention_ignores_groups: bool,
    /// How often retention is applied.
    pub retention_check_interval: Duration,
    /// How long a dedup id is remembered.
    pub dedup_window: Duration,
    /// Default visibility timeout of a delivery.
    pub lease: Duration,
    /// Default deliveries before dead-lettering.
    pub max_attempts: u32,
    /// Default most unacknowledged deliveries per consumer.
    pub prefetch: u32,
    /// Most client connections at once.
    pub max_connections: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Partitions of a topic created implicitly (by a produce or fetch); 0 = no implicit topics.
    pub auto_create_partitions: u32,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl BrokerConfig {
    /// A configuration with the defaults, for `data_dir` and `listen`.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            listen,
            metrics_listen: None,
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            token: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            segment_bytes: 64 * 1024 * 1024,
            retention_bytes: 0,
            retention: Duration::ZERO,
            retention_ignores_groups: false,
            retention_check_interval: Duration::from_secs(10),
            dedup_window: Duration::from_secs(600),
            lease: Duration::from_secs(30),
            max_attempts: 5,
            prefetch: 1000,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(600),
            auto_create_partitions: 0,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies_durations_and_sizes() {
        assert_eq!(FsyncPolicy::parse("always").unwrap(), FsyncPolicy::Always);
        assert_eq!(
            FsyncPolicy::parse("interval:50ms").unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(50))
        );
        assert!(FsyncPolicy::parse("sometimes").is_err());
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("150").unwrap(), Duration::from_millis(150));
        assert!(parse_duration("2 parsecs").is_err());
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999TiB").is_err());
    }
}
