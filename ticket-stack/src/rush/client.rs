//! A minimal keep-alive HTTP/1.1 client for the crowd: one connection per crowd slot,
//! reconnected after an error, every step under a deadline, response bodies capped.
//!
//! The connection is driven inside the request's own future (no task per connection): in
//! `demo` the crowd shares the two cores with the stack it measures, and a hand-off to a
//! connection task and back for every request cost it about a fifth of its CPU.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest response body the crowd reads.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The target.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The request or its answer failed or took too long.
    #[error("request to {addr}: {reason}")]
    Request {
        /// The target.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
}

/// One keep-alive connection to the target.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    /// The `Host` header, made once (`None`: the host given is not a valid header value, which
    /// every request then reports).
    host: Option<HeaderValue>,
    timeout: Duration,
    /// The request side and the connection it runs on (polled only while a request is out).
    link: Option<Link>,
}

/// One open connection: hyper's request handle and the connection future that does its I/O.
#[derive(Debug)]
struct Link {
    sender: SendRequest<Full<Bytes>>,
    conn: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

impl Conn {
    /// A connection (opened on first use) to `addr`, sending `Host: host`.
    pub fn new(addr: SocketAddr, host: &str, timeout: Duration) -> Self {
        Self {
            addr,
            host: HeaderValue::from_str(host).ok(),
            timeout,
            link: None,
        }
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let addr = self.addr;
        let fail = |reason: String| ClientError::Connect { addr, reason };
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| fail(format!("timed out after {:?}", self.timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        self.link = Some(Link {
            sender,
            conn: Box::pin(conn),
        });
        Ok(())
    }

    /// Whether the open connection (if any) can take a request. Nothing polls the connection
    /// between requests, so a close the server sent while it was idle (its keep-alive timeout)
    /// is noticed here, by letting the connection run once without waiting.
    async fn link_is_usable(&mut self) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let ended = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(link.conn.as_mut().poll(cx).is_ready())
        })
        .await;
        if ended || link.sender.is_closed() {
            self.link = None;
            return false;
        }
        true
    }

    /// Sends one request and reads the whole answer. The caller passes its headers already
    /// made: a crowd sends the same names on every request, and parsing them each time showed
    /// in its profile.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let addr = self.addr;
        let fail = |reason: String| ClientError::Request { addr, reason };
        let Some(host) = self.host.clone() else {
            return Err(fail("the target's host is not a valid Host header".into()));
        };
        if !self.link_is_usable().await {
            self.connect().await?;
        }
        let has_body = !body.is_empty();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = path
            .parse()
            .map_err(|e: http::uri::InvalidUri| fail(e.to_string()))?;
        let h = req.headers_mut();
        h.insert(http::header::HOST, host);
        if has_body {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for (k, v) in headers {
            h.append(k.clone(), v.clone());
        }
        let timeout = self.timeout;
        let Some(Link { sender, conn }) = self.link.as_mut() else {
            return Err(fail("no connection".into()));
        };
        let exchange = async {
            sender.ready().await.map_err(|e| fail(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        // The exchange finishes first on a healthy keep-alive connection. The connection
        // future ends first when the connection does, possibly right after it handed over the
        // answer (a server that closes after answering): the exchange then finishes from what
        // was handed over, or fails if nothing was.
        let mut ended = false;
        let driven = async {
            tokio::pin!(exchange);
            tokio::select! {
                biased;
                answer = &mut exchange => answer,
                _ = conn.as_mut() => {
                    ended = true;
                    exchange.await
                }
            }
        };
        let result = tokio::time::timeout(timeout, driven)
            .await
            .unwrap_or_else(|_| Err(fail(format!("no answer within {timeout:?}"))));
        if ended || result.is_err() {
            // Closed, or in an unknown state: start over on the next request.
            self.link = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers one request per connection with keep-alive, then closes the connection: the
    /// first one a moment later, as a server's idle timeout would (the client must notice
    /// before its next request), the second one right after the answer (the client must still
    /// read the answer). Either way the next request goes out on a new connection.
    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for round in 0..3 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client sent a whole request head");
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                if round == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                s.shutdown().await.unwrap();
            }
        });
        let mut conn = Conn::new(addr, "test", Duration::from_secs(5));
        for _ in 0..3 {
            let (status, body) = conn
                .send(Method::GET, "/", &[], Bytes::new())
                .await
                .unwrap();
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
            // Let the server's close arrive before the next request.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.await.unwrap();
    }
}
