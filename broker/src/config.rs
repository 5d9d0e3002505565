//! The broker's validated configuration. `main` turns flags into this once; the rest of the
//! crate trusts it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME_BYTES;

/// The most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// Smallest and largest `max_frame_bytes`.
pub const FRAME_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1 << 30;

/// Smallest and largest `segment_bytes` the log works with. `broker serve` asks for at least
/// [`SERVE_MIN_SEGMENT_BYTES`]: segments below that are for tests that make the log roll.
pub const SEGMENT_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=1 << 30;

/// The smallest `--segment-bytes` that `broker serve` takes: a smaller segment rolls every few
/// records and costs a file (and an fsync of the directory) each time.
pub const SERVE_MIN_SEGMENT_BYTES: u64 = 1 << 16;

/// The shortest `retention_check_interval`.
pub const MIN_RETENTION_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A configuration the broker cannot run with, named by the `broker serve` flag that sets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} {reason}")]
pub struct ConfigError {
    /// The flag (without `--`) whose value is wrong.
    pub flag: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

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

/// The most brokers in a cluster.
pub const MAX_CLUSTER_NODES: usize = 9;

/// A broker's place in a cluster (`broker serve --node-id N --peers ...`); see REPLICATION.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This broker's id, unique in the cluster (1 and up).
    pub node_id: u64,
    /// Every member's `HOST:PORT` for traffic between brokers, this broker's own included (a
    /// host name is resolved at each connect, so a member that moves is found again).
    pub peers: BTreeMap<u64, String>,
    /// Where clients are told to reach this broker (its leader address in metadata answers).
    pub advertise: String,
    /// How often the Raft leader heartbeats its followers.
    pub heartbeat: Duration,
    /// A node that hears no leader for this long (drawn up to twice as long) starts an
    /// election: with the heartbeat, what bounds failover time.
    pub election_timeout: Duration,
    /// How long a request to another broker may take before it is given up.
    pub peer_timeout: Duration,
    /// A broker that starts with no cluster state (a new, empty disk) joins the running
    /// cluster instead of forming a new one (`REPLICATION.md`, "A broker on a new disk").
    /// Ignored once the broker has cluster state.
    pub join: bool,
}

impl ClusterConfig {
    /// A cluster of `peers` with default timings, as node `node_id`, advertising `advertise`.
    pub fn new(node_id: u64, peers: BTreeMap<u64, String>, advertise: impl Into<String>) -> Self {
        Self {
            node_id,
            peers,
            advertise: advertise.into(),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(500),
            peer_timeout: Duration::from_secs(2),
            join: false,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |flag: &'static str, reason: String| Err(ConfigError { flag, reason });
        if self.node_id == 0 {
            return invalid("node-id", "must be 1 or more".into());
        }
        if !self.peers.contains_key(&self.node_id) {
            return invalid(
                "peers",
                format!("must name this broker's own id {} too", self.node_id),
            );
        }
        if let Some((id, addr)) = self.peers.iter().find(|(_, a)| !is_host_port(a)) {
            return invalid(
                "peers",
                format!("names node {id} at {addr:?}, which is not HOST:PORT"),
            );
        }
        if !is_host_port(&self.advertise) {
            return invalid(
                "advertise",
                format!("{:?} is not HOST:PORT", self.advertise),
            );
        }
        if self.peers.len() > MAX_CLUSTER_NODES {
            return invalid(
                "peers",
                format!(
                    "names {} brokers; a cluster has at most {MAX_CLUSTER_NODES}",
                    self.peers.len()
                ),
            );
        }
        if self.heartbeat.is_zero() || self.heartbeat * 3 > self.election_timeout {
            return invalid(
                "heartbeat",
                format!(
                    "must be above zero and at most a third of --election-timeout ({:?})",
                    self.election_timeout
                ),
            );
        }
        if self.peer_timeout.is_zero() {
            return invalid("peer-timeout", "must be above zero".into());
        }
        Ok(())
    }
}

/// Whether `s` is `HOST:PORT`: a host (a name, an IPv4 address or a bracketed IPv6 one) and a
/// port from 1 to 65535.
pub fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
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
    /// The cluster this broker is a member of; `None` for a single broker.
    pub cluster: Option<ClusterConfig>,
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
            cluster: None,
        }
    }

    /// Checks the ranges the rest of the crate relies on. [`crate::server::Server::bind`]
    /// refuses a configuration that fails it, however it was made.
    ///
    /// # Errors
    /// The first value out of its range, named by its flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |flag: &'static str, reason: String| Err(ConfigError { flag, reason });
        if !FRAME_BYTES_RANGE.contains(&self.max_frame_bytes) {
            return invalid("max-frame-bytes", "must be between 1KiB and 1GiB".into());
        }
        if !SEGMENT_BYTES_RANGE.contains(&self.segment_bytes) {
            return invalid("segment-bytes", "must be between 1KiB and 1GiB".into());
        }
        if self.retention_check_interval < MIN_RETENTION_CHECK_INTERVAL {
            return invalid(
                "retention-check-interval",
                format!("must be at least {MIN_RETENTION_CHECK_INTERVAL:?}"),
            );
        }
        if self.max_attempts == 0 {
            return invalid("max-attempts", "must be at least 1".into());
        }
        if self.prefetch == 0 {
            return invalid("prefetch", "must be at least 1".into());
        }
        if self.max_connections == 0 {
            return invalid("max-connections", "must be at least 1".into());
        }
        if self.auto_create_partitions > MAX_PARTITIONS {
            return invalid(
                "auto-create-partitions",
                format!("must be at most {MAX_PARTITIONS}"),
            );
        }
        if self.token.as_deref() == Some("") {
            return invalid(
                "token",
                "must not be empty (leave it out for no token)".into(),
            );
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
            if self.auto_create_partitions > 0 {
                return invalid(
                    "auto-create-partitions",
                    "does not work in a cluster: a topic is created through the cluster's Raft; create it first".into(),
                );
            }
        }
        Ok(())
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

    #[test]
    fn host_port_takes_names_and_addresses() {
        for ok in [
            "127.0.0.1:7070",
            "broker-0.brokers.ns.svc:7070",
            "[::1]:7070",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in ["broker", ":7070", "broker:0", "broker:70000", "a b:1", ""] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn the_defaults_validate_and_each_range_is_checked_by_its_flag() {
        let ok = BrokerConfig::new("data", ([127, 0, 0, 1], 0).into());
        assert_eq!(ok.validate(), Ok(()));
        type Spoil = fn(&mut BrokerConfig);
        let peers: BTreeMap<u64, String> = (1..=3)
            .map(|n| (n, format!("broker-{n}.brokers:7070")))
            .collect();
        let mut clustered = ok.clone();
        clustered.cluster = Some(ClusterConfig::new(2, peers, "broker-2.brokers:7070"));
        assert_eq!(clustered.validate(), Ok(()));
        let cases: [(&str, Spoil); 17] = [
            ("max-frame-bytes", |c| c.max_frame_bytes = 100),
            ("max-frame-bytes", |c| c.max_frame_bytes = 2 << 30),
            ("segment-bytes", |c| c.segment_bytes = 512),
            ("retention-check-interval", |c| {
                c.retention_check_interval = Duration::from_millis(10);
            }),
            ("max-attempts", |c| c.max_attempts = 0),
            ("prefetch", |c| c.prefetch = 0),
            ("max-connections", |c| c.max_connections = 0),
            ("auto-create-partitions", |c| {
                c.auto_create_partitions = 5000
            }),
            ("token", |c| c.token = Some(String::new())),
            ("node-id", |c| c.cluster.as_mut().unwrap().node_id = 0),
            ("peers", |c| c.cluster.as_mut().unwrap().node_id = 7),
            ("peers", |c| {
                let cl = c.cluster.as_mut().unwrap();
                for n in 4..=10 {
                    cl.peers.insert(n, format!("127.0.0.1:{n}"));
                }
            }),
            ("heartbeat", |c| {
                c.cluster.as_mut().unwrap().heartbeat = Duration::from_millis(600)
            }),
            ("peer-timeout", |c| {
                c.cluster.as_mut().unwrap().peer_timeout = Duration::ZERO
            }),
            ("auto-create-partitions", |c| c.auto_create_partitions = 4),
            ("peers", |c| {
                c.cluster
                    .as_mut()
                    .unwrap()
                    .peers
                    .insert(1, "broker-1".into());
            }),
            ("advertise", |c| {
                c.cluster.as_mut().unwrap().advertise = ":7070".into()
            }),
        ];
        for (flag, spoil) in cases {
            let mut c = clustered.clone();
            spoil(&mut c);
            let e = c.validate().expect_err(flag);
            assert_eq!(e.flag, flag);
            assert!(e.to_string().starts_with(&format!("--{flag} ")), "{e}");
        }
    }
}
