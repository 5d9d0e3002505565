//! Test helpers (feature `test-util`): fake backends with routes, latency, failures and
//! health toggles, plus a tiny HTTP/1.1 client. Everything binds 127.0.0.1 port 0 and stops
//! cleanly (every task is tracked and watches a cancellation token).
//!
//! Fake backend routes:
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200, or 503 after [`FakeBackend::set_healthy`]`(false)` |
//! | `/status/{code}` | that status (`?retry_after` adds `Retry-After: 2`) |
//! | `/echo` | the request body streamed back |
//! | `/bytes/{n}` | `n` bytes in 64 KiB chunks |
//! | `/stream/{n}` | the same with no length announced (sent chunked) |
//! | `/upgrade` with `Upgrade: echo` | 101, then every byte sent is echoed back |
//! | anything else | 200, JSON `{"backend","method","path","headers"}` |
//!
//! Every non-health answer waits the backend's latency first (or `?delay_ms=N`), carries
//! `x-backend: <name>`, and honours [`FakeBackend::fail_next`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use plumbing::accept::{Admitted, CappedListener, WhenFull};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type FakeBody = BoxBody<Bytes, BoxError>;

#[derive(Debug, Default)]
struct FakeState {
    name: String,
    latency_ms: AtomicU64,
    healthy: AtomicBool,
    fail_next: AtomicU32,
    hits: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    arrivals: Mutex<Vec<String>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// A running fake backend.
#[derive(Debug)]
pub struct FakeBackend {
    addr: SocketAddr,
    state: Arc<FakeState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl FakeBackend {
    /// Starts a backend called `name` on 127.0.0.1 port 0.
    pub async fn start(name: &str) -> std::io::Result<Self> {
        Self::start_on(name, "127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts a backend on a given address (to restart one on its old port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = crate::listener::bind(addr, false)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let state = Arc::new(FakeState {
            name: name.to_owned(),
            healthy: AtomicBool::new(true),
            tasks: tracker.clone(),
            cancel: cancel.clone(),
            ..FakeState::default()
        });
        let (st, c, t) = (Arc::clone(&state), cancel.clone(), tracker.clone());
        tracker.spawn(accept_loop(listener, st, c, t));
        Ok(Self {
            addr,
            state,
            cancel,
            tracker,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name (the `x-backend` header and `backend` JSON field).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Sets the latency of every non-health request.
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Makes `/healthz` pass or fail.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::Relaxed);
    }

    /// The next `n` non-health requests get 500.
    pub fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::Relaxed);
    }

    /// Non-health requests seen.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }

    /// Non-health requests running now.
    pub fn in_flight(&self) -> u64 {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    /// Most non-health requests ever running at once.
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::Relaxed)
    }

    /// `x-seq` header values in arrival order.
    pub fn arrivals(&self) -> Vec<String> {
        self.state
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Stops at once: closes the listener and every connection (like a killed process).
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<FakeState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    // More than any test opens at once.
    let listener = CappedListener::new(listener, 10_000, WhenFull::Wait);
    while let Some(Admitted { stream, slot, .. }) = listener.admit(&cancel).await {
        let (st, c) = (Arc::clone(&state), cancel.clone());
        tracker.spawn(async move {
            let service = service_fn(move |req| respond(req, Arc::clone(&st)));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = c.cancelled() => {}
            }
            drop(slot);
        });
    }
}

struct InFlight<'a>(&'a FakeState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn full(status: StatusCode, name: &str, body: impl Into<Bytes>) -> Response<FakeBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| -> BoxError { match never {} })
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(name) {
        r.headers_mut().insert("x-backend", v);
    }
    r
}

async fn respond(
    mut req: Request<Incoming>,
    st: Arc<FakeState>,
) -> Result<Response<FakeBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        let ok = st.healthy.load(Ordering::Relaxed);
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(full(status, &st.name, if ok { "ok" } else { "unhealthy" }));
    }
    st.hits.fetch_add(1, Ordering::Relaxed);
    let now = st.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    st.max_in_flight.fetch_max(now, Ordering::Relaxed);
    let _guard = InFlight(&st);
    if let Some(seq) = req.headers().get("x-seq").and_then(|v| v.to_str().ok())
        && let Ok(mut a) = st.arrivals.lock()
    {
        a.push(seq.to_owned());
    }
    let delay = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay_ms=")))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| st.latency_ms.load(Ordering::Relaxed));
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = st
        .fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return Ok(full(
            StatusCode::INTERNAL_SERVER_ERROR,
            &st.name,
            "injected failure",
        ));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = full(status, &st.name, "");
        if req.uri().query().is_some_and(|q| q.contains("retry_after")) {
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("2"),
            );
        }
        return Ok(r);
    }
    if path == "/upgrade" && req.headers().contains_key(http::header::UPGRADE) {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let cancel = st.cancel.clone();
        st.tasks.spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut io = TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(&mut io);
            tokio::select! {
                _ = tokio::io::copy(&mut r, &mut w) => {}
                _ = cancel.cancelled() => {}
            }
        });
        let mut r = full(StatusCode::SWITCHING_PROTOCOLS, &st.name, "");
        r.headers_mut().insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("echo"),
        );
        r.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        return Ok(r);
    }
    if path == "/echo" {
        let mut r = Response::new(
            req.into_body()
                .map_err(|e| -> BoxError { Box::new(e) })
                .boxed(),
        );
        if let Ok(v) = http::HeaderValue::from_str(&st.name) {
            r.headers_mut().insert("x-backend", v);
        }
        return Ok(r);
    }
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
        .map(|n| (n, true))
        .or_else(|| {
            path.strip_prefix("/stream/")
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| (n, false))
        })
    {
        let (n, exact) = n;
        let body = Chunks {
            remaining: n,
            exact,
        };
        let mut r = Response::new(body.boxed());
        if let Ok(v) = http::HeaderValue::from_str(&st.name) {
            r.headers_mut().insert("x-backend", v);
        }
        return Ok(r);
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "backend": st.name,
        "method": req.method().as_str(),
        "path": req.uri().to_string(),
        "headers": headers,
    });
    let mut r = full(StatusCode::OK, &st.name, body.to_string());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `remaining` bytes of `x` in 64 KiB frames, produced lazily.
#[derive(Debug)]
struct Chunks {
    remaining: usize,
    /// The length is announced (else the body is sent chunked).
    exact: bool,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        const CHUNK: usize = 64 * 1024;
        let this = self.get_mut();
        if this.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = CHUNK.min(this.remaining);
        this.remaining -= len;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; len])))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.exact {
            http_body::SizeHint::with_exact(u64::try_from(self.remaining).unwrap_or(u64::MAX))
        } else {
            http_body::SizeHint::default()
        }
    }
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// Errors of the test client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    /// HTTP failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// Building the request failed.
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// The exchange took too long.
    #[error("timed out")]
    Timeout,
}

/// A keep-alive HTTP/1.1 client connection for tests.
#[derive(Debug)]
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    _driver: tokio::task::JoinHandle<()>,
}

/// Per-exchange deadline of the test client.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(CLIENT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            addr,
            _driver: driver,
        })
    }

    /// Sends a request and reads the whole reply.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply, ClientError> {
        let fut = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, ClientError>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(CLIENT_TIMEOUT, fut)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Reply, ClientError> {
        let req = Request::get(path)
            .header(http::header::HOST, self.addr.to_string())
            .body(Full::new(Bytes::new()))?;
        self.send(req).await
    }

    /// The connection is closed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// One request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Reply, ClientError> {
    Client::connect(addr).await?.get(path).await
}

/// An h2 prior-knowledge (h2c) `GET`.
pub async fn get_h2c(addr: SocketAddr, path: &str) -> Result<Reply, ClientError> {
    let stream = tokio::time::timeout(CLIENT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Timeout)??;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(format!("http://{addr}{path}")).body(Full::new(Bytes::new()))?;
    let fut = async {
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, ClientError>(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    let r = tokio::time::timeout(CLIENT_TIMEOUT, fut)
        .await
        .map_err(|_| ClientError::Timeout)?;
    driver.abort();
    r
}
