//! Helpers for tests, behind the `testing` feature: a raw HTTP/1.1 `GET` that reads the whole
//! answer, a free loopback port, waiting for a condition with a deadline instead of sleeping,
//! and a TCP proxy that injects network faults ([`fault_proxy`]). A helper that cannot do its
//! job panics with what broke: it is test code.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod fault_proxy;
pub use fault_proxy::{Direction, FaultProxy};

/// A loopback port that is free now, for a program that takes a port number and cannot tell
/// which one it bound. Another process may take it before the program binds it; on a test
/// machine's loopback that is rare.
///
/// # Panics
/// When loopback port 0 cannot be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("loopback port 0 can be bound")
        .port()
}

/// An answer to [`http_get`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The head, status line and headers, as sent.
    pub head: String,
    /// The body as sent (not de-chunked), lossily as UTF-8.
    pub body: String,
}

/// `GET path` with `Connection: close` on a fresh connection, read to the end (10 s at most).
///
/// # Errors
/// When the connection fails, nothing whole arrives within 10 s, or the answer has no
/// HTTP/1.x head.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<RawResponse> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no whole answer within 10 s")
        })??;
    let text = String::from_utf8_lossy(&raw);
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP/1.x answer: {text:?}"),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok(RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` once `limit` has passed.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
