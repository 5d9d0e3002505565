//! Test helpers: an API on 127.0.0.1 port 0 over SQLite in a temp dir and the in-memory queue,
//! and a tiny HTTP/1 client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use ticket_svc::http::{ApiConfig, ApiState, ServeConfig, router, serve};
use ticket_svc::metrics::Metrics;
use ticket_svc::queue::{MemoryQueue, MemoryQueueConfig};
use ticket_svc::store::SqliteStore;

/// A running API instance.
pub struct TestApi {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

/// The shared backend several API instances (and workers) can use.
pub struct Backend {
    pub store: Arc<SqliteStore>,
    pub queue: Arc<MemoryQueue>,
    pub metrics: Arc<Metrics>,
    pub _dir: tempfile::TempDir,
}

pub async fn backend(queue: MemoryQueueConfig) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("tickets.db"))
        .await
        .unwrap();
    Backend {
        store: Arc::new(store),
        queue: Arc::new(MemoryQueue::new(queue)),
        metrics: Arc::new(Metrics::unregistered()),
        _dir: dir,
    }
}

pub async fn start_api(b: &Backend, config: ApiConfig) -> TestApi {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let state = ApiState::new(
        Arc::clone(&b.store),
        Arc::clone(&b.queue),
        metrics,
        Arc::new(registry),
        config,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(serve(
        listener,
        router(state),
        ServeConfig {
            header_read_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        async move { stop.cancelled().await },
    ));
    TestApi {
        addr,
        shutdown,
        task,
    }
}

impl TestApi {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A response, with the body as text and (when it parses) as JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub text: String,
    pub json: serde_json::Value,
}

/// One request on a fresh connection, bounded by a 10 s deadline.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    tokio::time::timeout(Duration::from_secs(10), async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        drop(sender);
        let _ = conn.await;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    })
    .await
    .expect("request finished within 10 s")
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, Method::GET, path, &[], Bytes::new()).await
}

pub async fn post_json(addr: SocketAddr, path: &str, body: serde_json::Value) -> Reply {
    call(
        addr,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// Creates an event through the API and returns its id.
pub async fn create_event(addr: SocketAddr, tickets: u32, max_per_buyer: u32) -> i64 {
    let r = post_json(
        addr,
        "/events",
        serde_json::json!({"name": "DJ night", "tickets": tickets, "max_per_buyer": max_per_buyer}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["id"].as_i64().unwrap()
}
