//! Replaying a request a backend received and then failed: a request carrying an
//! `Idempotency-Key` whose body the balancer held whole goes, byte for byte, to another
//! backend when the first one closed the connection without answering (and, with
//! `--retry-on-5xx`, when it answered 502). Without the key, with a streamed body, or with
//! `--replay-idempotency-key off`, the client gets the 502.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balancer::{BackendSpec, Config};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use balancer::testing::{Client, Reply};

use crate::support::{TestBalancer, fill, find};

/// What a scripted backend does with each request once it has read all of it.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Closes the connection without a byte of answer (as a SIGKILLed process's kernel does).
    Vanish,
    /// Answers with this status and an empty body.
    Status(u16),
    /// Answers 201 with a JSON body naming the backend.
    Create,
}

/// A request as a backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    /// The head as sent, request line included.
    head: String,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A raw-TCP backend that reads whole requests and follows its script; health checks pass.
struct ScriptedBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl ScriptedBackend {
    async fn start(name: &'static str, script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (r, k, t) = (Arc::clone(&received), cancel.clone(), tracker.clone());
        tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = k.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (r, k) = (Arc::clone(&r), k.clone());
                t.spawn(async move {
                    tokio::select! {
                        _ = serve(stream, name, script, r) => {}
                        _ = k.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            received,
            cancel,
            tracker,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn serve(mut s: TcpStream, name: &str, script: Script, received: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !fill(&mut s, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut request = Received {
            head,
            body: Vec::new(),
        };
        assert!(
            request.header("transfer-encoding").is_none(),
            "these tests send Content-Length bodies: {}",
            request.head
        );
        let length = request
            .header("content-length")
            .map_or(0, |v| v.parse::<usize>().unwrap());
        while buf.len() < length {
            if !fill(&mut s, &mut buf).await {
                return;
            }
        }
        request.body = buf.drain(..length).collect();
        if request.head.starts_with("GET /healthz ") {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            continue;
        }
        received.lock().unwrap().push(request);
        let answer = match script {
            // Dropping the stream closes the connection: every byte of the request was read,
            // so the balancer sees a clean end with no answer.
            Script::Vanish => return,
            Script::Status(code) => format!(
                "HTTP/1.1 {code} Whatever\r\nX-Backend: {name}\r\nContent-Length: 0\r\n\r\n"
            ),
            Script::Create => {
                let body = format!(r#"{{"purchase":"from-{name}"}}"#);
                format!(
                    "HTTP/1.1 201 Created\r\nX-Backend: {name}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Two backends, `first` then `second`: the round robin of a fresh balancer sends the first
/// request to `first`. No health checks run during a test.
fn config(first: &ScriptedBackend, second: &ScriptedBackend) -> Config {
    let specs = vec![BackendSpec::new(first.addr), BackendSpec::new(second.addr)];
    let mut c = Config::new("127.0.0.1:0".parse().unwrap(), specs);
    c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    c.health.interval = Duration::from_secs(60);
    c.health.timeout = Duration::from_secs(5);
    c.timeouts.drain = Duration::from_secs(5);
    c
}

const PURCHASE: &str = r#"{"buyer":"ada","quantity":2}"#;

/// `POST /events/7/purchases` with `body`, and `key` as its Idempotency-Key if any.
async fn purchase(lb: &TestBalancer, key: Option<&str>, body: Bytes) -> Reply {
    let mut req = Request::post("/events/7/purchases")
        .header("host", "tickets")
        .header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let mut client = Client::connect(lb.addr).await.unwrap();
    client
        .send(req.body(Full::new(body)).unwrap())
        .await
        .unwrap()
}

fn metric(lb: &TestBalancer, series: &str) -> u64 {
    let text = lb.handle.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

const KEYED_REPLAYS: &str = r#"balancer_replays_total{reason="idempotency_key"}"#;
const IDEMPOTENT_REPLAYS: &str = r#"balancer_replays_total{reason="idempotent"}"#;

/// A keyed purchase in flight at a backend that vanishes reaches the other one, whole.
async fn keyed_purchase_is_replayed(tune: impl FnOnce(&mut Config)) {
    let a = ScriptedBackend::start("a", Script::Vanish).await;
    let b = ScriptedBackend::start("b", Script::Create).await;
    let mut cfg = config(&a, &b);
    tune(&mut cfg);
    let lb = TestBalancer::start(cfg);
    let r = purchase(&lb, Some("k-123"), Bytes::from_static(PURCHASE.as_bytes())).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-backend").as_deref(), Some("b"));
    assert_eq!(r.text(), r#"{"purchase":"from-b"}"#);
    let (at_a, at_b) = (a.received(), b.received());
    assert_eq!(at_a.len(), 1, "the first attempt went to a");
    assert_eq!(at_b.len(), 1, "one replay to b");
    let replayed = &at_b[0];
    assert!(
        replayed
            .head
            .starts_with("POST /events/7/purchases HTTP/1.1\r\n")
    );
    assert_eq!(replayed.header("idempotency-key"), Some("k-123"));
    assert_eq!(replayed.body, PURCHASE.as_bytes());
    // The same request, byte for byte (its generated X-Request-Id included).
    assert_eq!(at_a[0], *replayed);
    assert_eq!(metric(&lb, KEYED_REPLAYS), 1);
    assert_eq!(metric(&lb, IDEMPOTENT_REPLAYS), 0);
    assert_eq!(metric(&lb, "balancer_retries_total"), 1);
    lb.stop().await.unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_keyed_post_at_a_backend_that_vanishes_is_replayed_whole_elsewhere() {
    // The own server's fast path: the backend's head is written from the client's bytes.
    keyed_purchase_is_replayed(|_| {}).await;
}

#[tokio::test]
async fn a_keyed_post_is_replayed_from_the_header_map_path_too() {
    // A trusted proxy makes the own server build a header map (the rate limiter reads
    // X-Forwarded-For): the key is found in the map, the body is still held whole.
    keyed_purchase_is_replayed(|c| c.limits.trust_forwarded = vec!["10.0.0.1".parse().unwrap()])
        .await;
}

/// The request goes to a, which vanishes: the client gets a 502 and b sees nothing.
async fn not_replayed(cfg: impl FnOnce(&mut Config), key: Option<&str>, body: Bytes) {
    let a = ScriptedBackend::start("a", Script::Vanish).await;
    let b = ScriptedBackend::start("b", Script::Create).await;
    let mut c = config(&a, &b);
    cfg(&mut c);
    let lb = TestBalancer::start(c);
    let r = purchase(&lb, key, body.clone()).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let at_a = a.received();
    assert_eq!(at_a.len(), 1, "the request went to a");
    assert_eq!(at_a[0].body, body, "a read all of it");
    assert_eq!(b.received(), [], "nothing was replayed to b");
    assert_eq!(metric(&lb, KEYED_REPLAYS), 0);
    lb.stop().await.unwrap();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_post_without_a_key_gets_the_502() {
    not_replayed(|_| {}, None, Bytes::from_static(PURCHASE.as_bytes())).await;
}

#[tokio::test]
async fn keyed_replays_can_be_turned_off() {
    let off = |c: &mut Config| c.retry.replay_idempotency_key = false;
    not_replayed(off, Some("k-1"), Bytes::from_static(PURCHASE.as_bytes())).await;
}

#[tokio::test]
async fn a_keyed_post_with_a_streamed_body_is_not_replayed() {
    // Over 64 KiB: hyper's server streams it to the backend, and the first attempt consumed it.
    let big = Bytes::from(vec![b'x'; 100 * 1024]);
    not_replayed(|_| {}, Some("k-2"), big).await;
}

#[tokio::test]
async fn a_keyed_post_answered_502_is_replayed_only_under_retry_on_5xx() {
    for on_5xx in [false, true] {
        let a = ScriptedBackend::start("a", Script::Status(502)).await;
        let b = ScriptedBackend::start("b", Script::Create).await;
        let mut cfg = config(&a, &b);
        cfg.retry.on_5xx = on_5xx;
        let lb = TestBalancer::start(cfg);
        let r = purchase(&lb, Some("k-3"), Bytes::from_static(PURCHASE.as_bytes())).await;
        let at_b = b.received();
        if on_5xx {
            assert_eq!(r.status, 201, "{}", r.text());
            assert_eq!(at_b.len(), 1);
            assert_eq!(at_b[0].body, PURCHASE.as_bytes());
            assert_eq!(metric(&lb, KEYED_REPLAYS), 1);
        } else {
            assert_eq!(r.status, 502, "the backend's own 502, passed on");
            assert_eq!(r.header("x-backend").as_deref(), Some("a"));
            assert_eq!(at_b, []);
            assert_eq!(metric(&lb, KEYED_REPLAYS), 0);
        }
        lb.stop().await.unwrap();
        a.stop().await;
        b.stop().await;
    }
}
