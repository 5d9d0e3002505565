//! Failover time of a broker cluster: starts three `broker` processes on loopback, produces
//! one record at a time through the leader, SIGKILLs the leader `--kills` times (restarting it
//! a moment later), and reports for each kill the time from the SIGKILL to the first produce
//! sent after it that was acknowledged.
//!
//! ```text
//! cargo build --release -p broker -p benches
//! target/release/failover --broker target/release/broker --kills 20
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use broker::client::{Client, ClientConfig};
use broker::protocol::Record;
use clap::Parser;
use tokio::process::{Child, Command};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Measures a broker cluster's failover time over repeated SIGKILLs of its leader")]
struct Cli {
    /// The broker binary.
    #[arg(long, default_value = "target/release/broker")]
    broker: PathBuf,
    /// How many times to kill the leader.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// The brokers' --election-timeout.
    #[arg(long, default_value = "500ms")]
    election_timeout: String,
    /// The brokers' --heartbeat.
    #[arg(long, default_value = "100ms")]
    heartbeat: String,
    /// Keep the brokers' data and logs (`node-N.log`, RUST_LOG=info) in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
}

struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    listens: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
    flags: Vec<String>,
}

impl Cluster {
    fn peers(&self) -> String {
        self.listens
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn bootstrap(&self) -> String {
        self.listens
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let dir = self.dir.join(format!("node-{}", i + 1));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))?;
        let child = Command::new(&self.bin)
            .args(["serve", "--no-metrics", "--listen"])
            .arg(self.listens[i].to_string())
            .arg("--data-dir")
            .arg(&dir)
            .args(["--node-id", &(i + 1).to_string(), "--peers", &self.peers()])
            .args(&self.flags)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.children[i].take() {
            c.start_kill()?;
            c.wait().await?;
        }
        Ok(())
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn client(addrs: &str) -> anyhow::Result<Client> {
    let mut cfg = ClientConfig::new(addrs);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.request_timeout = Duration::from_secs(5);
    Ok(Client::connect(cfg).await?)
}

/// The index of the broker that leads, once one serves (it creates the topic, a request only
/// the serving leader takes).
async fn leader(c: &Cluster) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(cl) = client(&c.bootstrap()).await
            && let Ok(m) = cl.metadata().await
            && let Some((id, addr)) = m.leader
            && !addr.is_empty()
            && cl.create_topic("failover", 4).await.is_ok()
        {
            return Ok(usize::try_from(id)? - 1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no leader within 30 s")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let temp = tempfile::tempdir()?;
    let dir = match &cli.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let mut c = Cluster {
        bin: cli.broker.clone(),
        dir,
        _temp: Some(temp),
        listens: vec![free_port()?, free_port()?, free_port()?],
        children: vec![None, None, None],
        flags: vec![
            "--election-timeout".into(),
            cli.election_timeout.clone(),
            "--heartbeat".into(),
            cli.heartbeat.clone(),
        ],
    };
    for i in 0..3 {
        c.spawn(i)?;
    }
    // `leader` creates the topic: a request only the serving leader takes.
    leader(&c).await?;
    // One producer, one record at a time: (sent, acknowledged).
    let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let producer = {
        let (acks, stop, bootstrap) = (Arc::clone(&acks), stop.clone(), c.bootstrap());
        tokio::spawn(async move {
            let mut conn: Option<Client> = None;
            let mut seq = 0u64;
            while !stop.is_cancelled() {
                seq += 1;
                let id = format!("r{seq}");
                let sent = Instant::now();
                let cl = match conn.as_ref().filter(|c| !c.is_closed()) {
                    Some(cl) => cl.clone(),
                    None => match client(&bootstrap).await {
                        Ok(cl) => {
                            conn = Some(cl.clone());
                            cl
                        }
                        Err(_) => continue,
                    },
                };
                match cl
                    .produce("failover", Record::new(id.clone()).with_dedup_id(id))
                    .await
                {
                    Ok(_) => acks
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((sent, Instant::now())),
                    Err(_) => {
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };
    let mut times = Vec::new();
    for k in 0..cli.kills {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let l = leader(&c).await?;
        let killed = Instant::now();
        c.kill(l).await?;
        let first = loop {
            let found = acks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|(sent, _)| *sent > killed)
                .map(|(_, acked)| acked.duration_since(killed));
            if let Some(t) = found {
                break t;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("kill {k}: nothing acknowledged within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!(
            "kill {k}: node {} SIGKILLed; first acknowledged produce after {:.0} ms",
            l + 1,
            first.as_secs_f64() * 1000.0
        );
        times.push(first);
        c.spawn(l)?;
    }
    stop.cancel();
    let _ = producer.await;
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "failover over {} kills (election timeout {}, heartbeat {}): median {:.0} ms, max {:.0} ms",
        times.len(),
        cli.election_timeout,
        cli.heartbeat,
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    for i in 0..3 {
        c.kill(i).await?;
    }
    Ok(())
}
