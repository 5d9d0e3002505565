//! A one-shot HTTP/1.1 `GET` that reads only the status code: readiness checks between
//! processes (the stack runner waits for its balancer with it), not a client.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on a fresh connection to `addr`; the status code of the answer.
///
/// # Errors
/// When nothing answers within `timeout`, the connection fails, or the answer does not start
/// with an HTTP/1.x status line.
pub async fn status(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        // "HTTP/1.1 200" is 12 bytes.
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        parse_status(&head).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP status line")
        })
    };
    tokio::time::timeout(timeout, io).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )
    })?
}

/// The code of an `HTTP/1.x NNN` status line's first 12 bytes.
fn parse_status(head: &[u8; 12]) -> Option<u16> {
    if !head.starts_with(b"HTTP/1.") || head.get(8) != Some(&b' ') {
        return None;
    }
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_and_anything_else_is_not() {
        assert_eq!(parse_status(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-Open"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2x0"), None);
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let e = status(addr, "/", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        drop(l);
    }
}
