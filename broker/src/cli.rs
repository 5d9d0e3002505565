//! The `broker` command line: serve the durable job broker, or talk to one (produce, consume,
//! topics, stats). A library module so another binary can run the same program
//! (`ticket-svc broker ...`, which the stack's cluster mode starts).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::client::{Client, ClientConfig, Consumer};
use crate::config::{
    BrokerConfig, ClusterConfig, FsyncPolicy, MAX_PARTITIONS, MIN_RETENTION_CHECK_INTERVAL,
    SERVE_MIN_SEGMENT_BYTES, parse_duration, parse_size,
};
use crate::protocol::{FetchMode, Record};
use crate::server::Server;
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use plumbing::logging::LogFormat;
use tokio_util::sync::CancellationToken;

/// ticketrush's durable append-log job broker.
///
/// Producers append records to topics; consumer groups pull them as leased deliveries,
/// acknowledge or reject them; failed records are retried and finally moved to `<topic>.dlq`.
#[derive(Debug, Parser)]
#[command(name = "broker", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=broker=debug).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "BROKER_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    Serve(Box<ServeArgs>),
    /// Append newline-delimited payloads from stdin; exits non-zero unless all were acknowledged.
    Produce(ProduceArgs),
    /// Print payloads of a group's deliveries, one per line, acknowledging each after printing.
    Consume(ConsumeArgs),
    /// Create or list topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// End offsets, per-group committed offsets, in flight, lag and dead letters.
    Stats(StatsArgs),
    /// Drain the broker at `--addr` before maintenance: it gives up leading (another broker is
    /// elected) and stands for no election until `--undo` or a restart.
    Drain(DrainArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address for client connections.
    #[arg(long, default_value = "127.0.0.1:7070", env = "BROKER_LISTEN")]
    listen: SocketAddr,
    /// Directory for topics and group progress; created if missing.
    #[arg(long, default_value = "./data", env = "BROKER_DATA_DIR")]
    data_dir: PathBuf,
    /// Address for GET /metrics and /healthz (Prometheus text format).
    #[arg(long, default_value = "127.0.0.1:9070", env = "BROKER_METRICS_LISTEN")]
    metrics_listen: SocketAddr,
    /// Serve no metrics listener.
    #[arg(long)]
    no_metrics: bool,
    /// When appends reach the disk: `always` (acknowledge after fdatasync, shared by concurrent
    /// producers), `interval[:DURATION]` (sync every 100ms or DURATION; a power cut loses up to
    /// that), or `never` (leave it to the kernel). A killed process loses nothing under any.
    #[arg(long, default_value = "always", value_parser = FsyncPolicy::parse, env = "BROKER_FSYNC")]
    fsync: FsyncPolicy,
    /// Shared secret clients must send in Hello (prefer the env var to keep it out of `ps`).
    #[arg(long, env = "BROKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Largest request frame; a larger one is answered with an error and the connection closed.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    max_frame_bytes: u64,
    /// Roll to a new segment file at this size.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    segment_bytes: u64,
    /// Default retention by size, per partition (0 = keep everything).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    retention_bytes: u64,
    /// Default retention by age, e.g. 7d (0 = keep everything).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    retention: Duration,
    /// Let retention delete segments that a consumer group has not finished. Without this,
    /// retention never deletes what a group still needs.
    #[arg(long)]
    retention_ignores_groups: bool,
    /// How often retention is applied.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    retention_check_interval: Duration,
    /// How long a produce's dedup id is remembered.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    dedup_window: Duration,
    /// Default visibility timeout of a delivery (a group's first fetch may set its own).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
    /// Default deliveries of a record before it goes to `<topic>.dlq`.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Default most unacknowledged deliveries per consumer.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    prefetch: u32,
    /// Most client connections; more are refused with a `busy` error.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Close a connection that sent nothing for this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Create unknown topics on first produce or fetch with this many partitions (0 = never).
    #[arg(long, default_value_t = 0)]
    auto_create_partitions: u32,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// This broker's id in a cluster (1 and up); needs --peers. Without both, the broker runs
    /// alone. See REPLICATION.md.
    #[arg(long, env = "BROKER_NODE_ID", requires = "peers")]
    node_id: Option<u64>,
    /// Every member of the cluster as ID=HOST:PORT, this broker included, comma-separated:
    /// where brokers reach each other (e.g. 1=10.0.0.1:7070,2=10.0.0.2:7070,3=10.0.0.3:7070;
    /// host names are resolved at each connect).
    #[arg(long, env = "BROKER_PEERS", value_parser = parse_peers, requires = "node_id")]
    peers: Option<BTreeMap<u64, String>>,
    /// The HOST:PORT clients are told to use for this broker (default: its entry in --peers).
    #[arg(long, env = "BROKER_ADVERTISE")]
    advertise: Option<String>,
    /// How often the cluster's leader heartbeats its followers.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    heartbeat: Duration,
    /// A broker that hears no leader for this long (drawn up to twice as long) starts an
    /// election; a leader that hears from no majority for this long stops serving.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    election_timeout: Duration,
    /// Deadline of a request between brokers.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    peer_timeout: Duration,
    /// This broker's disk is new (replaced, or wiped): join the running cluster under its old
    /// id instead of forming a new one. Ignored once the broker has cluster state, so it may
    /// stay set after the first start. See REPLICATION.md.
    #[arg(long, env = "BROKER_JOIN", requires = "node_id")]
    join: bool,
}

/// Parses `1=host:port,2=host:port,...` (hosts may be names, resolved at each connect).
fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} in {part:?} is not a node id (1 and up)"))?;
        let addr = addr.trim();
        if !crate::config::is_host_port(addr) {
            return Err(format!("{addr:?} in {part:?} is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("node {id} is named twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(peers)
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Broker address; for a cluster, several, comma-separated (the client finds the leader).
    #[arg(long, default_value = "127.0.0.1:7070", env = "BROKER_ADDR")]
    addr: String,
    /// The broker's token, if it has one.
    #[arg(long, env = "BROKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long to keep trying to connect.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
}

impl ClientArgs {
    async fn connect(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(self.config()).await?)
    }

    /// A connection to the broker named by `--addr` itself, not to the leader it would name.
    async fn connect_to_this_one(&self) -> anyhow::Result<Client> {
        let mut config = self.config();
        config.follow_leader = false;
        Ok(Client::connect(config).await?)
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.addr.clone()).with_token(self.token.clone());
        config.connect_timeout = self.connect_timeout;
        config
    }
}

#[derive(Debug, Args)]
struct ProduceArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic to append to.
    #[arg(long)]
    topic: String,
    /// Key of every record (records with one key share a partition, in order).
    #[arg(long)]
    key: Option<String>,
    /// Records per produce request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Topic to consume.
    #[arg(long)]
    topic: String,
    /// Consumer group (created on first use; a new group starts at the oldest record).
    #[arg(long)]
    group: String,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop when nothing arrives within this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    wait_ms: u32,
    /// Group mode when the group is created.
    #[arg(long, value_enum, default_value_t = Mode::Shared)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Shared,
    Ordered,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic (succeeds if it exists).
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Topic name: 1-249 of A-Z a-z 0-9 . _ -
        name: String,
        /// Partition count (1-1024).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Retention by size per partition (0 = the broker's default).
        #[arg(long, default_value = "0", value_parser = parse_size)]
        retention_bytes: u64,
        /// Retention by age (0 = the broker's default).
        #[arg(long, default_value = "0", value_parser = parse_duration)]
        retention: Duration,
    },
    /// List topics with partitions and end offsets.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only this topic.
    #[arg(long)]
    topic: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// The broker to drain (one address: this broker, not the leader it would name).
    #[command(flatten)]
    client: ClientArgs,
    /// Take the broker back: it may be elected again.
    #[arg(long)]
    undo: bool,
}

/// Runs the broker's command line with `args` (the first is the program's name, as in
/// `std::env::args_os`) and says how it ended.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    plumbing::logging::init_quieting(cli.log_format, crate::cluster::peers::is_unreachable_noise);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::sync_on_park)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("broker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Produce(args) => produce(args).await,
        Command::Consume(args) => consume(args).await,
        Command::Topic(TopicCommand::Create {
            client,
            name,
            partitions,
            retention_bytes,
            retention,
        }) => {
            let c = client.connect().await?;
            let ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
            let created = c
                .create_topic_with(&name, partitions, retention_bytes, ms)
                .await?;
            println!(
                "{} topic {name}",
                if created { "created" } else { "exists:" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Topic(TopicCommand::List { client }) => {
            let stats = client.connect().await?.stats("").await?;
            println!("{:<40} {:>10} {:>14}", "TOPIC", "PARTITIONS", "END OFFSETS");
            for t in stats["topics"].as_array().into_iter().flatten() {
                println!(
                    "{:<40} {:>10} {:>14}",
                    t["name"].as_str().unwrap_or("?"),
                    t["partitions"],
                    t["end_offset"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Drain(args) => {
            let c = args.client.connect_to_this_one().await?;
            let (draining, m) = c.drain(!args.undo).await?;
            let leader = m.leader.map_or_else(
                || "no leader is known yet".to_string(),
                |(id, addr)| format!("node {id} leads epoch {} at {addr}", m.epoch),
            );
            if draining {
                println!("drained: this broker stands for no election; {leader}");
            } else {
                println!("taken back: this broker may be elected again; {leader}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats(args) => {
            // The broker named, not the leader it would send a client to: a follower's own view.
            let stats = args
                .client
                .connect_to_this_one()
                .await?
                .stats(args.topic.as_deref().unwrap_or(""))
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print_stats(&stats);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_stats(stats: &serde_json::Value) {
    let c = &stats["cluster"];
    if c.is_object() {
        println!(
            "cluster node {}  epoch {}  leader {}  {}{}",
            c["node"],
            c["epoch"],
            c["leader"],
            if c["serving"].as_bool() == Some(true) {
                "serving"
            } else {
                "following"
            },
            match (c["draining"].as_bool(), c["joining"].as_bool()) {
                (_, Some(true)) => "  JOINING",
                (Some(true), _) => "  DRAINED",
                _ => "",
            }
        );
        for p in c["replication"].as_array().into_iter().flatten() {
            let followers: Vec<String> = p["followers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    format!(
                        "node {} lag {} records / {:.1}s",
                        f["node"],
                        f["lag_records"],
                        f["lag_seconds"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            println!(
                "  {}/{}  in sync {}  {}{}",
                p["topic"].as_str().unwrap_or("?"),
                p["partition"],
                p["in_sync_replicas"],
                followers.join(", "),
                if p["under_replicated"].as_bool() == Some(true) {
                    "  UNDER-REPLICATED"
                } else {
                    ""
                }
            );
        }
    }
    for t in stats["topics"].as_array().into_iter().flatten() {
        println!(
            "topic {}  partitions {}  end offsets {}",
            t["name"].as_str().unwrap_or("?"),
            t["partitions"],
            t["end_offset"]
        );
        for p in t["partition_stats"].as_array().into_iter().flatten() {
            println!(
                "  partition {:<4} start {:<10} end {:<10} bytes {}",
                p["partition"], p["start_offset"], p["end_offset"], p["bytes"]
            );
        }
        for g in t["groups"].as_array().into_iter().flatten() {
            println!(
                "  group {} ({})  consumers {}  in flight {}  lag {}  redeliveries {}  dead letters {}",
                g["name"].as_str().unwrap_or("?"),
                g["mode"].as_str().unwrap_or("?"),
                g["consumers"],
                g["in_flight"],
                g["lag"],
                g["redeliveries"],
                g["dead_letters"]
            );
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = BrokerConfig::new(&args.data_dir, args.listen);
    config.metrics_listen = (!args.no_metrics).then_some(args.metrics_listen);
    config.fsync = args.fsync;
    config.token = args.token.filter(|t| !t.is_empty());
    config.max_frame_bytes = usize::try_from(args.max_frame_bytes).unwrap_or(usize::MAX);
    if args.segment_bytes < SERVE_MIN_SEGMENT_BYTES {
        anyhow::bail!("--segment-bytes must be between 64KiB and 1GiB");
    }
    config.segment_bytes = args.segment_bytes;
    config.retention_bytes = args.retention_bytes;
    config.retention = args.retention;
    config.retention_ignores_groups = args.retention_ignores_groups;
    config.retention_check_interval = args
        .retention_check_interval
        .max(MIN_RETENTION_CHECK_INTERVAL);
    config.dedup_window = args.dedup_window;
    config.lease = args.lease;
    config.max_attempts = args.max_attempts;
    config.prefetch = args.prefetch;
    config.max_connections = args.max_connections.max(1);
    config.idle_timeout = args.idle_timeout;
    config.auto_create_partitions = args.auto_create_partitions.min(MAX_PARTITIONS);
    config.drain_timeout = args.drain_timeout;
    if let (Some(node_id), Some(peers)) = (args.node_id, args.peers) {
        let advertise = args
            .advertise
            .or_else(|| peers.get(&node_id).cloned())
            .unwrap_or_else(|| args.listen.to_string());
        let mut cluster = ClusterConfig::new(node_id, peers, advertise);
        cluster.heartbeat = args.heartbeat;
        cluster.election_timeout = args.election_timeout;
        cluster.peer_timeout = args.peer_timeout;
        cluster.join = args.join;
        config.cluster = Some(cluster);
    }
    let fsync = config.fsync;
    // Handlers first: a SIGTERM that arrives once the broker says it is serving must drain it,
    // not kill it.
    let shutdown = CancellationToken::new();
    plumbing::signals::cancel_on_stop_signal(shutdown.clone())
        .context("installing the SIGTERM and SIGINT handlers")?;
    // A broker joining on a new disk waits for the other brokers before it serves: a SIGTERM
    // meanwhile stops it (nothing is served or written yet).
    let server = tokio::select! {
        server = Server::bind(config, prometheus_client::registry::Registry::default()) => server?,
        () = shutdown.cancelled() => {
            tracing::info!("stopped before serving");
            return Ok(ExitCode::SUCCESS);
        }
    };
    tracing::info!(
        listen = %server.local_addr()?,
        metrics = ?server.metrics_addr(),
        data_dir = %args.data_dir.display(),
        fsync = fsync.name(),
        "broker serving"
    );
    server.run(shutdown).await;
    Ok(ExitCode::SUCCESS)
}

async fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.connect().await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<String>>(4);
    let batch = args.batch.max(1);
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let stdin = std::io::stdin();
        let mut lines = Vec::with_capacity(batch);
        for line in stdin.lock().lines() {
            lines.push(line.context("reading stdin")?);
            if lines.len() >= batch && tx.blocking_send(std::mem::take(&mut lines)).is_err() {
                return Ok(());
            }
        }
        if !lines.is_empty() {
            let _ = tx.blocking_send(lines);
        }
        Ok(())
    });
    let mut acked = 0u64;
    let mut failed = 0u64;
    while let Some(lines) = rx.recv().await {
        let n = lines.len() as u64;
        let records = lines
            .into_iter()
            .map(|l| {
                let r = Record::new(l);
                match &args.key {
                    Some(k) => r.with_key(k.clone()),
                    None => r,
                }
            })
            .collect();
        match client.produce_batch(&args.topic, records).await {
            Ok(_) => acked += n,
            Err(e) => {
                failed += n;
                eprintln!("broker: {n} records not acknowledged: {e}");
                if !e.is_retriable() || client.is_closed() {
                    break;
                }
            }
        }
    }
    drop(rx);
    reader.await.context("stdin reader")??;
    eprintln!("produced {acked} records to {}", args.topic);
    if failed > 0 {
        eprintln!("broker: {failed} records were not acknowledged");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.connect().await?;
    let mode = match args.mode {
        Mode::Shared => FetchMode::Shared,
        Mode::Ordered => FetchMode::Ordered,
    };
    let consumer = Consumer::new(client, &args.topic, &args.group, mode)
        .wait(Duration::from_millis(u64::from(args.wait_ms)));
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        let left = args.max.map(|m| m.saturating_sub(printed));
        if left == Some(0) {
            break;
        }
        let consumer = match left {
            Some(l) => consumer
                .clone()
                .max_records(u32::try_from(l.min(1000)).unwrap_or(1000)),
            None => consumer.clone(),
        };
        let deliveries = consumer.fetch().await?;
        if deliveries.is_empty() {
            break;
        }
        let mut ids = Vec::with_capacity(deliveries.len());
        {
            let mut out = stdout.lock();
            for d in &deliveries {
                out.write_all(&d.record.payload)?;
                out.write_all(b"\n")?;
                ids.push(d.delivery_id);
            }
            out.flush()?;
        }
        consumer.ack(&ids).await?;
        printed += ids.len() as u64;
    }
    eprintln!("consumed {printed} records from {}", args.topic);
    Ok(ExitCode::SUCCESS)
}
