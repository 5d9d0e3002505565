//! A minimal keep-alive HTTP/1.1 client for the crowd: one connection per crowd slot,
//! reconnected after an error, every step under a deadline, response bodies capped.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

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
    host: String,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
    task: Option<JoinHandle<()>>,
}

impl Conn {
    /// A connection (opened on first use) to `addr`, sending `Host: host`.
    pub fn new(addr: SocketAddr, host: &str, timeout: Duration) -> Self {
        Self {
            addr,
            host: host.to_owned(),
            timeout,
            sender: None,
            task: None,
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
        if let Some(old) = self.task.take() {
            old.abort();
        }
        // Ends when the sender is dropped or the peer closes; aborted on reconnect and drop.
        self.task = Some(tokio::spawn(async move {
            let _ = conn.await;
        }));
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let addr = self.addr;
        let fail = |reason: String| ClientError::Request { addr, reason };
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.connect().await?;
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host);
        if !body.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| fail(e.to_string()))?;
        let timeout = self.timeout;
        let Some(sender) = self.sender.as_mut() else {
            return Err(fail("no connection".into()));
        };
        let result = tokio::time::timeout(timeout, async {
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
        })
        .await
        .unwrap_or_else(|_| Err(fail(format!("no answer within {timeout:?}"))));
        if result.is_err() {
            // The connection's state is unknown: start over on the next request.
            self.sender = None;
        }
        result
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
