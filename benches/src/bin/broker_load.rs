//! `broker_load`: drives a running broker over loopback and reports throughput and latency.
//!
//! ```text
//! broker_load produce --fsync always --producers 64 --batch 1 --records 200000
//! broker_load e2e --fsync always --rate 10000 --seconds 10 --consumers 4
//! ```
//! Without `--addr` it starts the release `broker` binary next to itself on a temp dir with the
//! given `--fsync`, and stops it (by PID) at the end. Figures go to stdout as one line of
//! `key=value` pairs, for scripts to collect.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use benches::peers::System;
use benches::peers::broker::{Broker, BrokerProducer};
use benches::workload::{self, ms};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Load generator for the ticketrush broker")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Produce as fast as possible; report records/s and request latency.
    Produce(ProduceArgs),
    /// Produce at a fixed rate while consumers fetch and ack; report produce→delivery latency
    /// measured from each record's intended send time (no coordinated omission).
    E2e(E2eArgs),
}

#[derive(Debug, Args)]
struct Target {
    /// A running broker; when absent, one is started on a temp dir.
    #[arg(long)]
    addr: Option<String>,
    /// fsync policy of the broker this tool starts.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// The broker binary to start (default: `broker` next to this executable).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Partitions of the bench topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 100)]
    payload: usize,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent producers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Records per produce request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Records in total.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
}

#[derive(Debug, Args)]
struct E2eArgs {
    #[command(flatten)]
    target: Target,
    /// Records per second to send.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to send.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Consumers in the (shared) group.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Producer connections sharing the schedule (each waits for its produce to be
    /// acknowledged before sending its next record, so enough of them must be in flight to
    /// keep up with the rate).
    #[arg(long, default_value_t = 64)]
    producers: usize,
}

struct Spawned {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn target(t: &Target) -> anyhow::Result<(String, Option<Spawned>)> {
    if let Some(a) = &t.addr {
        return Ok((a.clone(), None));
    }
    let bin = match &t.broker_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable has a directory")?
            .join("broker"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p broker`",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "serve",
            "--no-metrics",
            "--listen",
            &addr,
            "--fsync",
            &t.fsync,
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((addr, Some(Spawned { child, _dir: dir })))
}

fn us(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    ms(h, q) * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Produce(a) => produce(a).await,
        Cmd::E2e(a) => e2e(a).await,
    }
}

async fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    let (addr, _spawned) = target(&a.target).await?;
    let broker = broker_for(&addr, &a.target);
    broker.create("bench").await?;
    let mut producers = Vec::new();
    for p in 0..a.producers {
        producers.push(broker.producer("bench", p).await?);
    }
    let r = workload::produce(producers, a.records, a.batch, a.target.payload, NO_LIMIT).await?;
    println!(
        "mode=produce fsync={} producers={} batch={} payload={} records={} seconds={:.2} records_per_s={:.0} req_p50_us={:.0} req_p99_us={:.0} req_max_us={:.0}",
        a.target.fsync,
        a.producers,
        a.batch,
        a.target.payload,
        r.records,
        r.seconds,
        r.records_per_s(),
        us(&r.latency, 0.5),
        us(&r.latency, 0.99),
        r.latency.max() as f64 / 1000.0
    );
    Ok(())
}

async fn e2e(a: E2eArgs) -> anyhow::Result<()> {
    let (addr, _spawned) = target(&a.target).await?;
    let broker = broker_for(&addr, &a.target);
    broker.create("e2e").await?;
    let mut receivers = Vec::new();
    for c in 0..a.consumers {
        receivers.push(broker.receiver("e2e", c).await?);
    }
    let producers = a.producers.max(1);
    let mut senders = Vec::new();
    for _ in 0..producers {
        senders.push(BrokerProducer::connect(&addr, "e2e", None).await?);
    }
    let r = workload::e2e(senders, receivers, a.rate, a.seconds, a.target.payload).await?;
    println!(
        "mode=e2e fsync={} rate={} seconds={} producers={} consumers={} delivered={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        a.target.fsync,
        a.rate,
        a.seconds,
        producers,
        a.consumers,
        r.latency.len(),
        ms(&r.latency, 0.5),
        ms(&r.latency, 0.99),
        ms(&r.latency, 0.999),
        r.latency.max() as f64 / 1e6
    );
    Ok(())
}

/// Runs without a time limit: a produce run ends at its record count.
const NO_LIMIT: Duration = Duration::from_secs(24 * 3600);

fn broker_for(addr: &str, t: &Target) -> Broker {
    Broker {
        addr: addr.to_string(),
        partitions: t.partitions,
        max_records: 500,
    }
}
