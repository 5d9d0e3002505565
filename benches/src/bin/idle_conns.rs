//! `idle_conns`: opens many HTTP/1.1 keep-alive connections, sends one request on each, reads
//! its response, then holds every connection open and idle. It measures what a proxy keeps per
//! idle client connection (its RSS with the connections held, minus before).
//!
//! ```text
//! idle_conns --addr 127.0.0.1:8080 --conns 10000 --hold-secs 30 --ready-file F
//! ```
//! Once all connections are open (or failed) it prints one line
//! `opened=N failed=F elapsed_ms=T` to stdout, writes the same line to `--ready-file` when
//! given (so a script can wait for it), then holds until `--hold-secs` pass or it gets
//! SIGTERM/Ctrl-C, and exits after closing every connection. It needs an open-file limit above
//! `--conns` (`ulimit -n`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(about = "Hold many idle HTTP/1.1 keep-alive connections open")]
struct Cli {
    /// Address to connect to (HTTP/1.1, plain text).
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Connections being opened at once (keeps the listener's accept backlog from overflowing).
    #[arg(long, default_value_t = 128)]
    parallel: usize,
    /// Path of the one request sent on each connection.
    #[arg(long, default_value = "/")]
    path: String,
    /// How long to hold the connections before closing them.
    #[arg(long, default_value_t = 60)]
    hold_secs: u64,
    /// Limit on connecting, sending and reading the response, per connection.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// File to write the summary line to once every connection is open or failed.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// Largest response head plus body read on a connection; the responses here are small.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: idle_conns\r\n\r\n",
        cli.path, cli.addr
    );
    let request: Arc<[u8]> = Arc::from(request.into_bytes());
    let gate = Arc::new(Semaphore::new(cli.parallel.max(1)));
    let timeout = Duration::from_secs(cli.timeout_secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cli.conns {
        let gate = Arc::clone(&gate);
        let request = Arc::clone(&request);
        let addr = cli.addr;
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.ok();
            tokio::time::timeout(timeout, open_one(addr, &request))
                .await
                .map_err(|_| anyhow::anyhow!("timed out"))?
        });
    }
    let mut held = Vec::with_capacity(cli.conns);
    let mut failed = 0usize;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.into());
            }
        }
    }
    let line = format!(
        "opened={} failed={} elapsed_ms={}",
        held.len(),
        failed,
        started.elapsed().as_millis()
    );
    println!("{line}");
    if let Some(e) = &first_error {
        eprintln!("idle_conns: first failure: {e:#}");
    }
    if let Some(path) = &cli.ready_file {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let hold = tokio::time::sleep(Duration::from_secs(cli.hold_secs));
    tokio::select! {
        () = hold => {}
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        () = sigterm() => {}
    }
    drop(held);
    Ok(())
}

/// Connects, sends the request and reads one complete response (Content-Length framed).
async fn open_one(addr: SocketAddr, request: &[u8]) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.context("connect")?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    stream.write_all(request).await.context("send")?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.context("read")?;
        if n == 0 {
            bail!("closed before a complete response");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(need) = complete_len(&buf)?
            && buf.len() >= need
        {
            return Ok(stream);
        }
        if buf.len() > MAX_RESPONSE_BYTES {
            bail!("response over {MAX_RESPONSE_BYTES} bytes");
        }
    }
}

/// Total length of the response in `buf` (head plus Content-Length body) once its head is in.
fn complete_len(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(buf.get(..head_end).unwrap_or_default())
        .context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 2") {
        bail!("unexpected status line: {status}");
    }
    let mut body = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            body = Some(value.trim().parse::<usize>().context("Content-Length")?);
        }
    }
    let Some(body) = body else {
        bail!("response without Content-Length (chunked is not handled)");
    };
    Ok(Some(head_end + 4 + body))
}

#[cfg(unix)]
async fn sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn sigterm() {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::complete_len;

    #[test]
    fn waits_for_the_head_then_counts_the_body() {
        assert_eq!(
            complete_len(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(),
            None
        );
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(complete_len(head).unwrap(), Some(head.len() + 5));
    }

    #[test]
    fn refuses_errors_and_unframed_bodies() {
        assert!(complete_len(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(complete_len(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(complete_len(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }
}
