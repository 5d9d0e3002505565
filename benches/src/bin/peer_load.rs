//! `peer_load`: the same broker workload against our broker, Redis Streams, NATS JetStream or
//! RabbitMQ, each already running, so that `benches/scripts/broker.sh` can compare them.
//!
//! ```text
//! peer_load --system redis --url redis://127.0.0.1:6390 --setting durable --mode all --seconds 3
//! peer_load --system rabbitmq --url amqp://guest:guest@127.0.0.1:5672/%2f --mode e2e --rate 10000
//! ```
//! `--mode all` runs, on fresh uniquely named streams: produce with 1 producer, produce with
//! `--producers`, consume-and-ack with `--consumers` of what that second run wrote, and e2e
//! latency at `--rate`; each phase prints one line of `key=value` pairs. Every phase is bounded
//! by `--seconds` (a consume phase by twice that); streams are deleted afterwards.
//!
//! `--setting` chooses how streams are made where the client decides (RabbitMQ: quorum queue and
//! persistent messages vs a transient classic queue; NATS: file vs memory storage). For our
//! broker and Redis durability is the server's setting (`--fsync`, `appendfsync`): the flag only
//! labels the output.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use benches::peers::broker::Broker;
use benches::peers::nats::Nats;
use benches::peers::rabbitmq::Rabbit;
use benches::peers::redis::Redis;
use benches::peers::{GROUP, System};
use benches::workload::{self, ms};
use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    about = "One broker workload against our broker, Redis Streams, NATS JetStream or RabbitMQ"
)]
struct Cli {
    /// The system under test.
    #[arg(long, value_enum)]
    system: Which,
    /// Where it listens: `HOST:PORT` (broker), `redis://…`, `nats://…`, `amqp://…`.
    #[arg(long)]
    url: String,
    /// Durability setting, for systems where the client chooses it; a label otherwise.
    #[arg(long, value_enum, default_value = "durable")]
    setting: Setting,
    /// What to run.
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// Concurrent producers (each its own connection; 1 producer is also run by `all`).
    #[arg(long, default_value_t = 64)]
    producers: usize,
    /// Consumers in the group (each its own connection).
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Most records per produce phase (and what `consume` preloads).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// e2e send rate, records/s.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Length of each phase.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Partitions of each topic (our broker only).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Replicas of the stream (NATS JetStream only; needs a clustered nats-server for more
    /// than 1; our broker's replication is the cluster's, set on its side).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Records a consumer may hold unacknowledged: fetch size (broker, Redis) or prefetch
    /// (RabbitMQ); JetStream keeps its consumer default (1000 pending acks).
    #[arg(long, default_value_t = 500)]
    prefetch: u16,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    Broker,
    Redis,
    Nats,
    Rabbitmq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Setting {
    Durable,
    Fast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Produce,
    Consume,
    E2e,
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let durable = cli.setting == Setting::Durable;
    match cli.system {
        Which::Broker => {
            let sys = Broker {
                addr: cli.url.clone(),
                partitions: cli.partitions,
                max_records: u32::from(cli.prefetch),
            };
            run(&cli, &sys).await
        }
        Which::Redis => {
            let sys = Redis {
                url: cli.url.clone(),
                count: usize::from(cli.prefetch),
            };
            run(&cli, &sys).await
        }
        Which::Nats => {
            let sys = Nats {
                url: cli.url.clone(),
                file: durable,
                replicas: cli.replicas,
            };
            run(&cli, &sys).await
        }
        Which::Rabbitmq => {
            let sys = Rabbit {
                url: cli.url.clone(),
                durable,
                prefetch: cli.prefetch,
            };
            run(&cli, &sys).await
        }
    }
}

/// Runs the chosen phases, each on its own stream, deleting the stream whether or not the
/// phase worked.
async fn run<S: System>(cli: &Cli, sys: &S) -> anyhow::Result<()> {
    let label = format!("system={:?} setting={:?}", cli.system, cli.setting).to_lowercase();
    let phase = Duration::from_secs(cli.seconds);
    if cli.mode == Mode::All {
        let name = unique("produce1");
        sys.create(&name).await?;
        let r = produce(sys, &name, 1, cli, phase, &label).await;
        sys.delete(&name).await?;
        r?;
    }
    if cli.mode != Mode::E2e {
        let name = unique("produce");
        sys.create(&name).await?;
        let r = produce_then_consume(sys, &name, cli, phase, &label).await;
        sys.delete(&name).await?;
        r?;
    }
    if matches!(cli.mode, Mode::E2e | Mode::All) {
        let name = unique("e2e");
        sys.create(&name).await?;
        let r = e2e(sys, &name, cli, &label).await;
        sys.delete(&name).await?;
        r?;
    }
    Ok(())
}

/// A stream name no other run uses: `bench-<what>-<pid>-<ns since the epoch>`.
fn unique(what: &str) -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench-{what}-{}-{ns}", std::process::id())
}

/// Produces for `phase` with `producers`; returns the records acknowledged.
async fn produce<S: System>(
    sys: &S,
    name: &str,
    producers: usize,
    cli: &Cli,
    phase: Duration,
    label: &str,
) -> anyhow::Result<u64> {
    let mut ps = Vec::new();
    for p in 0..producers {
        ps.push(sys.producer(name, p).await?);
    }
    let r = workload::produce(ps, cli.records, 1, cli.payload, phase).await?;
    println!(
        "{label} mode=produce producers={producers} payload={} records={} seconds={:.2} records_per_s={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        cli.payload,
        r.records,
        r.seconds,
        r.records_per_s(),
        ms(&r.latency, 0.5),
        ms(&r.latency, 0.99),
        r.latency.max() as f64 / 1e6,
    );
    Ok(r.records)
}

/// Produces with `--producers` (for `phase`, or in `consume` mode until `--records` are in,
/// at most a minute), then drains what was acknowledged with `--consumers` for at most twice
/// `phase`.
async fn produce_then_consume<S: System>(
    sys: &S,
    name: &str,
    cli: &Cli,
    phase: Duration,
    label: &str,
) -> anyhow::Result<()> {
    let fill = if cli.mode == Mode::Consume {
        Duration::from_secs(60)
    } else {
        phase
    };
    let produced = produce(sys, name, cli.producers, cli, fill, label).await?;
    if cli.mode == Mode::Produce {
        return Ok(());
    }
    let mut rs = Vec::new();
    for c in 0..cli.consumers {
        rs.push(sys.receiver(name, c).await?);
    }
    let r = workload::consume(rs, produced, phase * 2).await?;
    println!(
        "{label} mode=consume consumers={} group={GROUP} available={produced} records={} seconds={:.2} records_per_s={:.0}",
        cli.consumers,
        r.records,
        r.seconds,
        r.records_per_s(),
    );
    Ok(())
}

/// Latency at a fixed rate from each record's intended send time.
async fn e2e<S: System>(sys: &S, name: &str, cli: &Cli, label: &str) -> anyhow::Result<()> {
    let mut rs = Vec::new();
    for c in 0..cli.consumers {
        rs.push(sys.receiver(name, c).await?);
    }
    let mut ps = Vec::new();
    for p in 0..cli.producers {
        ps.push(sys.producer(name, p).await?);
    }
    let r = workload::e2e(ps, rs, cli.rate, cli.seconds, cli.payload).await?;
    println!(
        "{label} mode=e2e rate={} seconds={} producers={} consumers={} sent={} delivered={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        cli.rate,
        cli.seconds,
        cli.producers,
        cli.consumers,
        r.sent,
        r.delivered,
        ms(&r.latency, 0.5),
        ms(&r.latency, 0.99),
        ms(&r.latency, 0.999),
        r.latency.max() as f64 / 1e6,
    );
    Ok(())
}
