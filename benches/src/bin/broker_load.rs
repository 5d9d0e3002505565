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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use broker::client::{Client, ClientConfig, Consumer};
use broker::protocol::{FetchMode, Record};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;

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

async fn connect(addr: &str) -> anyhow::Result<Client> {
    let mut cfg = ClientConfig::new(addr);
    cfg.connect_timeout = Duration::from_secs(10);
    Ok(Client::connect(cfg).await?)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
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
    let admin = connect(&addr).await?;
    admin.create_topic("bench", a.target.partitions).await?;
    let payload = Bytes::from(vec![b'x'; a.target.payload]);
    let remaining = Arc::new(AtomicU64::new(a.records));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..a.producers {
        let client = connect(&addr).await?;
        let remaining = Arc::clone(&remaining);
        let payload = payload.clone();
        let batch = a.batch.max(1) as u64;
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
            let mut n = 0u64;
            loop {
                let take = remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                        r.checked_sub(1).map(|_| r.saturating_sub(batch))
                    })
                    .map(|before| before.min(batch))
                    .unwrap_or(0);
                if take == 0 {
                    break;
                }
                let records = (0..take)
                    .map(|i| Record {
                        payload: payload.clone(),
                        key: Some(Bytes::from(format!("k{p}-{i}"))),
                        ..Record::default()
                    })
                    .collect();
                let t0 = Instant::now();
                client.produce_batch("bench", records).await?;
                h.record(t0.elapsed().as_nanos() as u64)?;
                n += take;
            }
            anyhow::Ok((n, h))
        }));
    }
    let mut total = 0;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for t in tasks {
        let (n, h) = t.await??;
        total += n;
        hist.add(h)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "mode=produce fsync={} producers={} batch={} payload={} records={} seconds={:.2} records_per_s={:.0} req_p50_us={:.0} req_p99_us={:.0} req_max_us={:.0}",
        a.target.fsync,
        a.producers,
        a.batch,
        a.target.payload,
        total,
        secs,
        total as f64 / secs,
        us(&hist, 0.5),
        us(&hist, 0.99),
        hist.max() as f64 / 1000.0
    );
    Ok(())
}

async fn e2e(a: E2eArgs) -> anyhow::Result<()> {
    let (addr, _spawned) = target(&a.target).await?;
    let admin = connect(&addr).await?;
    admin.create_topic("e2e", a.target.partitions).await?;
    let origin = Instant::now();
    let total = a.rate * a.seconds;
    let received = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for _ in 0..a.consumers {
        let c = connect(&addr).await?;
        let received = Arc::clone(&received);
        let consumer = Consumer::new(c, "e2e", "bench", FetchMode::Shared)
            .max_records(500)
            .wait(Duration::from_millis(100));
        consumers.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
            let deadline = Instant::now() + Duration::from_secs(a.seconds + 30);
            while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                let got = consumer.fetch().await?;
                let now = origin.elapsed().as_nanos() as u64;
                let mut ids = Vec::with_capacity(got.len());
                for d in &got {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(d.record.payload.get(..8).unwrap_or(&[0; 8]));
                    h.record(now.saturating_sub(u64::from_be_bytes(b)).max(1))?;
                    ids.push(d.delivery_id);
                }
                if !ids.is_empty() {
                    consumer.ack(&ids).await?;
                    received.fetch_add(ids.len() as u64, Ordering::Relaxed);
                }
            }
            anyhow::Ok(h)
        }));
    }
    // Producers: a pool sends each record at its intended time; latency counts from then.
    let producers = a.producers.max(1);
    let interval_ns = 1_000_000_000 / a.rate.max(1);
    let mut tasks = Vec::new();
    for p in 0..producers {
        let client = connect(&addr).await?;
        let pad = a.target.payload.max(8) - 8;
        tasks.push(tokio::spawn(async move {
            let mut i = p as u64;
            while i < total {
                let due = Duration::from_nanos(i * interval_ns);
                let now = origin.elapsed();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
                let mut payload = (due.as_nanos() as u64).to_be_bytes().to_vec();
                payload.resize(8 + pad, b'x');
                client.produce("e2e", Record::new(payload)).await?;
                i += producers as u64;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for c in consumers {
        hist.add(c.await??)?;
    }
    println!(
        "mode=e2e fsync={} rate={} seconds={} producers={} consumers={} delivered={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        a.target.fsync,
        a.rate,
        a.seconds,
        producers,
        a.consumers,
        hist.len(),
        us(&hist, 0.5) / 1000.0,
        us(&hist, 0.99) / 1000.0,
        us(&hist, 0.999) / 1000.0,
        hist.max() as f64 / 1e6
    );
    Ok(())
}
