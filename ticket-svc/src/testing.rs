//! Test helpers for this crate's and other crates' tests, behind the `test-util` feature: an API
//! on 127.0.0.1 port 0 over SQLite in a temp dir (or any store) and the in-memory queue, and a
//! tiny HTTP/1 client. A helper that fails panics with what broke: it is test code.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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

use crate::access::{
    Access, AccessConfig, CodeSender, Email, KeyRing, LoginCode, OrganizerTokens, SendFuture,
    unix_now,
};
use crate::config_error::ConfigError;
use crate::domain::{EventId, Position, PurchaseId, PurchaseJob, QueuedJob};
use crate::http::{ApiConfig, ApiState, FrontDoor, ServeConfig, router, serve};
use crate::line::{LineLog, MemoryLineLog};
use crate::metrics::Metrics;
use crate::queue::{MemoryQueue, MemoryQueueConfig};
use crate::store::{SqliteStore, Store};
use crate::worker::{Worker, WorkerConfig};

/// The signing key of every test API (all of them share it, as a deployment's instances do).
pub const TEST_SIGNING_KEY: &str = "test:0123456789abcdef0123456789abcdef";
/// The organizer token of every test API.
pub const TEST_ORGANIZER_TOKEN: &str = "test-organizer-token-0123456789";

/// The gatekeeper of a test API: [`TEST_SIGNING_KEY`], [`TEST_ORGANIZER_TOKEN`], codes to the log.
pub fn test_access() -> Access {
    Access::new(AccessConfig::new(
        KeyRing::parse(&[TEST_SIGNING_KEY]).expect("the test key parses"),
        OrganizerTokens::parse(&[TEST_ORGANIZER_TOKEN]).expect("the test organizer token parses"),
    ))
}

/// [`test_access`], with login codes sent by `login_sender` (`log` or a webhook URL).
pub fn test_access_sending_to(login_sender: &str) -> Access {
    Access::new(
        AccessConfig::from_flags(
            &[TEST_SIGNING_KEY],
            &[TEST_ORGANIZER_TOKEN],
            login_sender,
            AccessConfig::DEFAULT_SESSION_TTL,
        )
        .expect("the test's login sender is valid"),
    )
}

/// A login sender that keeps every code it is asked to send, for a test to read; while down,
/// it fails every send.
#[derive(Clone, Default)]
pub struct Outbox {
    sent: Arc<Mutex<Vec<(String, String)>>>,
    down: Arc<AtomicBool>,
}

impl Outbox {
    /// The last code sent to `email` (as normalized: trimmed, lower case), if any.
    pub fn last_code_for(&self, email: &str) -> Option<String> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|(to, _)| to == email)
            .map(|(_, code)| code.clone())
    }

    /// How many codes were sent.
    pub fn sent(&self) -> usize {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Makes every later send fail (`true`) or succeed again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl CodeSender for Outbox {
    fn send<'a>(&'a self, code: LoginCode<'a>) -> SendFuture<'a> {
        let result = if self.down.load(Ordering::SeqCst) {
            Err("the mail service is down".to_owned())
        } else {
            self.sent
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((code.email.to_string(), code.code.to_owned()));
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }

    fn name(&self) -> &'static str {
        "outbox"
    }
}

/// A gatekeeper with [`TEST_SIGNING_KEY`] and `organizers`, sending codes to `outbox`.
pub fn access_with(outbox: &Outbox, organizers: &[&str]) -> Access {
    let mut config = AccessConfig::new(
        KeyRing::parse(&[TEST_SIGNING_KEY]).expect("the test key parses"),
        OrganizerTokens::parse(organizers).expect("the test's organizer tokens parse"),
    );
    config.sender = Box::new(outbox.clone());
    Access::new(config)
}

/// The `Authorization` value of a session for the buyer `name@test.example` (signed with the
/// test key, as the API would sign it after a login).
pub fn session_of(name: &str) -> String {
    let email = Email::parse(&format!("{name}@test.example")).expect("a test buyer's address");
    format!(
        "Bearer {}",
        test_access().session_for(&email, unix_now()).token
    )
}

/// The buyer id of `name@test.example`, as purchases show it.
pub fn buyer_id_of(name: &str) -> String {
    let email = Email::parse(&format!("{name}@test.example")).expect("a test buyer's address");
    crate::access::BuyerId::of(&email).as_str().to_owned()
}

/// The `Authorization` value of the organizer.
pub fn organizer() -> String {
    format!("Bearer {TEST_ORGANIZER_TOKEN}")
}

/// A running API instance.
pub struct TestApi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics_addr: SocketAddr,
    /// Cancel to drain it.
    pub shutdown: CancellationToken,
    /// The server task: its result is the server's.
    pub task: JoinHandle<std::io::Result<()>>,
}

/// The store, queue and metrics that several API instances (and workers) of a test share.
pub struct TestDeps {
    /// SQLite in [`TestDeps::dir`].
    pub store: Arc<SqliteStore>,
    /// The in-memory purchase queue.
    pub queue: Arc<MemoryQueue>,
    /// Metrics registered nowhere.
    pub metrics: Arc<Metrics>,
    /// The waiting rooms' line log, shared by every API of the test (one line however many
    /// instances serve it).
    pub line_log: Arc<MemoryLineLog>,
    /// The temp dir, removed when this is dropped.
    pub dir: tempfile::TempDir,
}

/// A purchase worker of a test, deciding what [`TestDeps`] queues until stopped.
pub struct TestWorker {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TestWorker {
    /// Stops the worker (it finishes the batch it is in) and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("the worker task did not panic");
    }
}

impl TestDeps {
    /// Starts a purchase worker over this store and queue (fetching every 20 ms).
    pub fn start_worker(&self) -> TestWorker {
        let worker = Worker::new(
            Arc::clone(&self.store),
            Arc::clone(&self.queue),
            Arc::clone(&self.metrics),
            WorkerConfig {
                fetch_wait: Duration::from_millis(20),
                ..Default::default()
            },
            "test-worker",
        );
        let stop = CancellationToken::new();
        let token = stop.clone();
        TestWorker {
            stop,
            task: tokio::spawn(async move { worker.run(token).await }),
        }
    }
}

/// A fresh SQLite store in a temp dir and an in-memory queue with `queue`'s settings.
pub async fn test_deps(queue: MemoryQueueConfig) -> TestDeps {
    let dir = tempfile::tempdir().expect("a temp dir can be made for the test store");
    let store = SqliteStore::open(dir.path().join("tickets.db"))
        .await
        .expect("SQLite opens in a fresh temp dir");
    TestDeps {
        line_log: Arc::new(MemoryLineLog::new()),
        store: Arc::new(store),
        queue: Arc::new(MemoryQueue::new(queue)),
        metrics: Arc::new(Metrics::unregistered()),
        dir,
    }
}

/// Starts an API instance over `deps` on loopback port 0, with [`test_access`].
pub async fn start_api(deps: &TestDeps, config: ApiConfig) -> TestApi {
    start_api_with(deps, config, test_access()).await
}

/// Starts an API instance over `deps` on loopback port 0 with its gatekeeper.
pub async fn start_api_with(deps: &TestDeps, config: ApiConfig, access: Access) -> TestApi {
    start_api_over(
        Arc::clone(&deps.store),
        Arc::clone(&deps.queue),
        Arc::clone(&deps.line_log) as Arc<dyn LineLog>,
        config,
        access,
    )
    .await
}

/// Starts an API instance over any store and an in-memory queue on loopback port 0.
pub async fn start_api_over<S: Store>(
    store: Arc<S>,
    queue: Arc<MemoryQueue>,
    line_log: Arc<dyn LineLog>,
    config: ApiConfig,
    access: Access,
) -> TestApi {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    store.register_read_metrics(&mut registry);
    let front = FrontDoor { access, line_log };
    let state = ApiState::new(store, queue, metrics, front, config);
    let gauges = state.clone();
    let pacer = state.clone();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port 0 can be bound");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let metrics_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port 0 can be bound");
    let metrics_addr = metrics_listener
        .local_addr()
        .expect("a bound listener has an address");
    let shutdown = CancellationToken::new();
    tokio::spawn(plumbing::metrics::serve(
        metrics_listener,
        Arc::new(registry),
        move || gauges.refresh_gauges(),
        shutdown.clone(),
    ));
    tokio::spawn(pacer.run_pacer(shutdown.clone()));
    let stop = shutdown.clone();
    let task = tokio::spawn(serve(
        listener,
        router(state),
        ServeConfig {
            header_read_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        stop,
    ));
    TestApi {
        addr,
        metrics_addr,
        shutdown,
        task,
    }
}

impl TestApi {
    /// Drains the API and panics if it failed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("the API task did not panic")
            .expect("the API drained cleanly");
    }
}

/// A response, with the body as text and (when it parses) as JSON.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body, lossily as UTF-8.
    pub text: String,
    /// The body as JSON, or `Null` when it is not JSON.
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
        let stream = TcpStream::connect(addr)
            .await
            .expect("the server under test accepts");
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1 handshake on a fresh connection");
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(
                req.body(Full::new(body.into()))
                    .expect("the test's method, path and headers are valid"),
            )
            .await
            .expect("the server under test answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("the response body arrives whole")
            .to_bytes();
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

/// `GET path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, Method::GET, path, &[], Bytes::new()).await
}

/// `POST path` with a JSON body on a fresh connection.
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

/// `POST path` with a JSON body and an `Authorization` value on a fresh connection.
pub async fn post_json_as(
    addr: SocketAddr,
    path: &str,
    authorization: &str,
    body: serde_json::Value,
) -> Reply {
    call(
        addr,
        Method::POST,
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", authorization),
        ],
        body.to_string(),
    )
    .await
}

/// `POST /events/{event}/purchases` of `quantity` by the test buyer `name` (see [`session_of`]),
/// with an `Idempotency-Key` when given.
pub async fn buy(
    addr: SocketAddr,
    event: i64,
    name: &str,
    quantity: i64,
    key: Option<&str>,
) -> Reply {
    let session = session_of(name);
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", session.as_str()),
    ];
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    call(
        addr,
        Method::POST,
        &format!("/events/{event}/purchases"),
        &headers,
        serde_json::json!({ "quantity": quantity }).to_string(),
    )
    .await
}

/// Creates an event through the API, as the organizer, and returns its id.
pub async fn create_event(addr: SocketAddr, tickets: u32, max_per_buyer: u32) -> i64 {
    let r = post_json_as(
        addr,
        "/events",
        &organizer(),
        serde_json::json!({"name": "DJ night", "tickets": tickets, "max_per_buyer": max_per_buyer}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["id"]
        .as_i64()
        .expect("a created event has a numeric id")
}

/// A purchase of `quantity` tickets of `event` by `buyer`, with a fresh id.
pub fn purchase(event: EventId, buyer: &str, quantity: u32) -> PurchaseJob {
    PurchaseJob {
        purchase_id: PurchaseId::new(),
        event_id: event,
        buyer: buyer.into(),
        quantity,
    }
}

/// [`purchase`], as the queue gave it `position`.
pub fn queued(event: EventId, buyer: &str, quantity: u32, position: u64) -> QueuedJob {
    QueuedJob {
        job: purchase(event, buyer, quantity),
        position: Position(position),
    }
}

/// A change that puts one setting of a configuration out of its range.
pub type Spoil<C> = fn(&mut C);

/// Asserts that `valid` passes `validate` and that each case's change makes it fail naming the
/// case's setting.
pub fn assert_each_refused<C: Clone>(
    valid: &C,
    validate: impl Fn(&C) -> Result<(), ConfigError>,
    cases: &[(&str, Spoil<C>)],
) {
    assert_eq!(validate(valid), Ok(()), "the valid configuration");
    for (setting, spoil) in cases {
        let mut c = valid.clone();
        spoil(&mut c);
        let e = validate(&c).expect_err(setting);
        assert_eq!(e.setting, *setting, "{e}");
    }
}

/// `url` naming database `name` instead of its own (its query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A client of the PostgreSQL server at `url`, its connection driven by a task of its own.
pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the PostgreSQL server accepts a connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database made for one test on the server of `TICKET_TEST_POSTGRES_URL`, dropped (`WITH
/// (FORCE)`, which ends every connection to it) when this is dropped, even by a panic.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    /// The database's URL.
    pub url: String,
}

impl TestDatabase {
    /// A fresh database named `PREFIX_<uuid>`, or `None` (the reason printed) when
    /// `TICKET_TEST_POSTGRES_URL` is not set.
    pub async fn create(prefix: &str) -> Option<Self> {
        let Ok(server) = std::env::var("TICKET_TEST_POSTGRES_URL") else {
            eprintln!("skipped: TICKET_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        pg_client(&server)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating a test database");
        let url = with_database(&server, &name);
        Some(Self { server, name, url })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, maybe during a panic: the database is dropped
        // from a thread with a runtime of its own.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the test database");
            rt.block_on(async {
                pg_client(&server)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_another_database() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
