//! The balancer's own upstream HTTP/1.1 client against a raw-TCP backend that writes
//! exactly the bytes each test needs: chunked, close-delimited and 100-Continue responses,
//! bodiless answers that still carry a Content-Length, heads that are too big or not HTTP,
//! chunked request bodies (and one found malformed after forwarding began), and a backend that
//! closes a pooled connection while it idles.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balancer::{BackendSpec, Config};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use balancer::testing::Client;

use crate::support::{TestBalancer, fill, find, row, wait_until};

/// A backend speaking raw HTTP/1.1 from a script keyed by path.
struct RawBackend {
    addr: SocketAddr,
    /// The connection id of every non-health request, in order.
    served_on: Arc<Mutex<Vec<usize>>>,
    /// Notified each time the backend closes a connection on purpose.
    closed: Arc<Notify>,
    /// Notified each time the balancer ends a connection in the middle of a request body.
    body_cut: Arc<Notify>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl RawBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served_on = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Notify::new());
        let body_cut = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (s, c, b, k, t) = (
            Arc::clone(&served_on),
            Arc::clone(&closed),
            Arc::clone(&body_cut),
            cancel.clone(),
            tracker.clone(),
        );
        tracker.spawn(async move {
            let ids = AtomicUsize::new(0);
            loop {
                let accepted = tokio::select! {
                    _ = k.cancelled() => return,
                    r = listener.accept() => r,
                };
                let Ok((stream, _)) = accepted else { continue };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let (s, c, b, k) = (Arc::clone(&s), Arc::clone(&c), Arc::clone(&b), k.clone());
                t.spawn(async move {
                    tokio::select! {
                        _ = serve(stream, id, s, c, b) => {}
                        _ = k.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            served_on,
            closed,
            body_cut,
            cancel,
            tracker,
        }
    }

    fn connections_used(&self) -> Vec<usize> {
        self.served_on.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Writes `pieces` one write each (so the balancer sees them split).
async fn write_pieces(s: &mut TcpStream, pieces: &[&[u8]]) {
    for p in pieces {
        s.write_all(p).await.unwrap();
        s.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
}

async fn serve(
    mut s: TcpStream,
    id: usize,
    served_on: Arc<Mutex<Vec<usize>>>,
    closed: Arc<Notify>,
    body_cut: Arc<Notify>,
) {
    s.set_nodelay(true).unwrap();
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
        let original = String::from_utf8_lossy(&buf[..end]).into_owned();
        let head = original.to_ascii_lowercase();
        buf.drain(..end);
        let mut words = original.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let path = words.next().unwrap_or_default().to_owned();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding: chunked");
        let body: Vec<u8> = if let Some(n) = length {
            while buf.len() < n {
                if !fill(&mut s, &mut buf).await {
                    body_cut.notify_one();
                    return;
                }
            }
            buf.drain(..n).collect()
        } else if chunked {
            // Good enough for these tests: the body ends at the first zero-size chunk.
            let end = loop {
                if let Some(i) = find(&buf, b"0\r\n\r\n") {
                    break i + 5;
                }
                if !fill(&mut s, &mut buf).await {
                    body_cut.notify_one();
                    return;
                }
            };
            buf.drain(..end).collect()
        } else {
            Vec::new()
        };
        if path == "/healthz" {
            write_pieces(&mut s, &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]).await;
            continue;
        }
        served_on.lock().unwrap().push(id);
        match path.as_str() {
            "/chunked" => {
                write_pieces(
                    &mut s,
                    &[
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: raw\r\n\r\n5;ext=1\r\nhel",
                        b"lo\r\n6\r\n world\r\n",
                        b"0\r\nx-trailer: t\r\n\r\n",
                    ],
                )
                .await;
            }
            "/close" => {
                write_pieces(
                    &mut s,
                    &[
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ",
                        b"the end",
                    ],
                )
                .await;
                return;
            }
            "/continue" => {
                write_pieces(
                    &mut s,
                    &[
                        b"HTTP/1.1 100 Continue\r\n\r\n",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                    ],
                )
                .await;
            }
            "/no-content" => {
                write_pieces(
                    &mut s,
                    &[b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"],
                )
                .await;
            }
            "/not-modified" => {
                write_pieces(
                    &mut s,
                    &[b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"],
                )
                .await;
            }
            "/hop" => {
                write_pieces(
                    &mut s,
                    &[
                        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
                        Proxy-Authenticate: Basic\r\nUpgrade: nothing\r\nX-Kept: Yes\r\n\
                        Date: Sat, 28 Nov 2026 12:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
                    ],
                )
                .await;
            }
            "/hop-named" => {
                write_pieces(
                    &mut s,
                    &[
                        b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\
                        X-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
                    ],
                )
                .await;
            }
            "/shed" => {
                write_pieces(
                    &mut s,
                    &[b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\n\
                        Content-Length: 4\r\n\r\nbusy"],
                )
                .await;
            }
            "/big-head" => {
                let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n", "b".repeat(200 * 1024));
                // The balancer gives up long before the end: ignore write errors.
                let _ = s.write_all(big.as_bytes()).await;
                return;
            }
            "/garbage" => {
                write_pieces(&mut s, &[b"SPDY/9 nonsense\r\n\r\n"]).await;
                return;
            }
            "/then-close" => {
                write_pieces(
                    &mut s,
                    &[b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine"],
                )
                .await;
                // Close while the balancer holds the connection idle in its pool.
                drop(s);
                closed.notify_one();
                return;
            }
            "/echo-raw" => {
                let framing = if chunked {
                    "chunked"
                } else if length.is_some() {
                    "length"
                } else {
                    "none"
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Framing: {framing}\r\n\r\n",
                    body.len()
                );
                write_pieces(&mut s, &[head.as_bytes(), &body]).await;
            }
            _ => {
                let text = format!("{method} {path}");
                let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len());
                if method != "HEAD" {
                    resp.push_str(&text);
                }
                write_pieces(&mut s, &[resp.as_bytes()]).await;
            }
        }
    }
}

fn config(addr: SocketAddr) -> Config {
    let mut c = Config::new("127.0.0.1:0".parse().unwrap(), vec![BackendSpec::new(addr)]);
    c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    c.health.interval = Duration::from_secs(60);
    c.health.timeout = Duration::from_secs(5);
    c.passive.failures = 0;
    c.timeouts.drain = Duration::from_secs(5);
    c
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "t")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn chunked_close_delimited_and_interim_responses_are_relayed() {
    let be = RawBackend::start().await;
    let lb = TestBalancer::start(config(be.addr));
    let mut client = Client::connect(lb.addr).await.unwrap();

    let r = client.send(get("/chunked")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.header("x-backend").as_deref(), Some("raw"));
    assert!(
        r.header("x-trailer").is_none(),
        "trailers are not forwarded"
    );
    // A cleanly ended chunked body leaves the connection reusable.
    let r = client.send(get("/after-chunked")).await.unwrap();
    assert_eq!(r.text(), "GET /after-chunked");
    let used = be.connections_used();
    assert_eq!(
        used[0], used[1],
        "the connection was reused after a chunked body"
    );

    let r = client.send(get("/close")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "until the end");
    let r = client.send(get("/continue")).await.unwrap();
    assert_eq!(r.status, 200, "the 100 Continue is skipped");
    assert_eq!(r.text(), "ok");
    let used = be.connections_used();
    assert_ne!(
        used[2], used[3],
        "a close-delimited body's connection is not reused"
    );

    for (path, status) in [("/no-content", 204), ("/not-modified", 304)] {
        let r = client.send(get(path)).await.unwrap();
        assert_eq!(r.status, status);
        assert!(r.body.is_empty());
    }
    let head = Request::head("/plain")
        .header("host", "t")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = client.send(head).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "no body for HEAD");
    // The bodiless answers left the connection usable: all on one.
    let r = client.send(get("/last")).await.unwrap();
    assert_eq!(r.text(), "GET /last");
    let used = be.connections_used();
    assert!(
        used[3..].iter().all(|&c| c == used[3]),
        "one connection for the 100/204/304/HEAD answers: {used:?}"
    );
    assert_eq!(row(&lb.handle, be.addr).unwrap().idle_connections, 1);
    lb.stop().await.unwrap();
    be.stop().await;
}

#[tokio::test]
async fn oversized_or_malformed_heads_get_502_and_the_balancer_carries_on() {
    let be = RawBackend::start().await;
    let lb = TestBalancer::start(config(be.addr));
    let mut client = Client::connect(lb.addr).await.unwrap();
    for path in ["/big-head", "/garbage"] {
        let r = client.send(get(path)).await.unwrap();
        assert_eq!(r.status, 502, "{path}: {}", r.text());
    }
    let r = client.send(get("/fine")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "GET /fine");
    lb.stop().await.unwrap();
    be.stop().await;
}

#[tokio::test]
async fn request_bodies_keep_their_framing() {
    let be = RawBackend::start().await;
    let lb = TestBalancer::start(config(be.addr));
    // Content-Length in, Content-Length out.
    let mut client = Client::connect(lb.addr).await.unwrap();
    let req = Request::post("/echo-raw")
        .header("host", "t")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let r = client.send(req).await.unwrap();
    assert_eq!(r.header("x-framing").as_deref(), Some("length"));
    assert_eq!(r.text(), "hello");
    // Chunked in, chunked out (re-framed per piece the client sent).
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"POST /echo-raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    tokio::task::yield_now().await;
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out).to_lowercase();
    assert!(out.starts_with("http/1.1 200"), "{out}");
    assert!(out.contains("x-framing: chunked"), "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    assert!(body.ends_with("0\r\n\r\n"), "{body:?}");
    let data: String = body
        .split("\r\n")
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(data, "hello world", "{body:?}");
    lb.stop().await.unwrap();
    be.stop().await;
}

#[tokio::test]
async fn a_body_found_malformed_after_forwarding_began_closes_the_backend_connection_at_once() {
    let be = RawBackend::start().await;
    let mut cfg = config(be.addr);
    // Far longer than the test may take: only the balancer closing it ends the backend's wait.
    cfg.timeouts.upstream_header = Duration::from_secs(60);
    let lb = TestBalancer::start(cfg);
    for (what, rest) in [
        ("a bad chunk size", &b"zz\r\nnot a chunk\r\n"[..]),
        ("a chunk without its line end", &b"3\r\nabcXY"[..]),
    ] {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(
            b"POST /echo-raw HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        // The head and the first chunk are on their way to the backend, which waits for more.
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(rest).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), be.body_cut.notified())
            .await
            .unwrap_or_else(|_| panic!("{what}: the backend still waits for the body after 5 s"));
        // The client is told (400) or cut off; it never gets the backend's answer.
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || out.starts_with("HTTP/1.1 400"),
            "{what}: {out}"
        );
    }
    // The balancer carries on, on a fresh connection.
    let mut client = Client::connect(lb.addr).await.unwrap();
    assert_eq!(client.send(get("/ok")).await.unwrap().status, 200);
    lb.stop().await.unwrap();
    be.stop().await;
}

#[tokio::test]
async fn a_pooled_connection_closed_while_idle_is_not_used() {
    let be = RawBackend::start().await;
    let lb = TestBalancer::start(config(be.addr));
    let mut client = Client::connect(lb.addr).await.unwrap();
    let closed = be.closed.notified();
    let r = client.send(get("/then-close")).await.unwrap();
    assert_eq!(r.text(), "fine");
    closed.await;
    // A POST with a body cannot be replayed: it succeeds only if the balancer sees the dead
    // connection before writing to it.
    let req = Request::post("/echo-raw")
        .header("host", "t")
        .body(Full::new(Bytes::from_static(b"once")))
        .unwrap();
    let r = client.send(req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "once");
    let used = be.connections_used();
    assert_ne!(used[0], used[1], "a new connection after the idle close");
    let h = lb.handle.clone();
    let addr = be.addr;
    wait_until("no errors recorded", Duration::from_secs(5), async || {
        row(&h, addr).is_some_and(|r| r.errors_total == 0 && r.requests_total == 2)
    })
    .await;
    lb.stop().await.unwrap();
    be.stop().await;
}

#[tokio::test]
async fn response_heads_pass_through_without_hop_by_hop_headers() {
    let be = RawBackend::start().await;
    let mut cfg = config(be.addr);
    // One failure would eject the only backend: a 503 that asks to retry later must not.
    cfg.passive.failures = 1;
    let lb = TestBalancer::start(cfg);
    // Both of the balancer's servers: its own (HTTP/1.1, the head copied through) and
    // hyper's (h2c, the head as a map).
    let addr = lb.addr;
    for h2 in [false, true] {
        let fetch = |path: &'static str| async move {
            if h2 {
                balancer::testing::get_h2c(addr, path).await.unwrap()
            } else {
                balancer::testing::get(addr, path).await.unwrap()
            }
        };
        let r = fetch("/hop").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
        assert_eq!(r.header("x-kept").as_deref(), Some("Yes"), "h2: {h2}");
        assert_eq!(
            r.header("date").as_deref(),
            Some("Sat, 28 Nov 2026 12:00:00 GMT"),
            "the backend's Date is kept, not doubled"
        );
        for gone in ["keep-alive", "proxy-authenticate", "upgrade"] {
            assert!(r.header(gone).is_none(), "{gone} was forwarded (h2: {h2})");
        }
        let r = fetch("/hop-named").await;
        assert_eq!(r.header("x-kept").as_deref(), Some("yes"));
        assert!(
            r.header("x-secret").is_none(),
            "named in Connection (h2: {h2})"
        );
        let r = fetch("/shed").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (503, "busy"));
        assert_eq!(r.header("retry-after").as_deref(), Some("3"));
        assert!(
            !row(&lb.handle, be.addr).unwrap().ejected,
            "a 503 with Retry-After is shedding, not a failure (h2: {h2})"
        );
    }
    lb.stop().await.unwrap();
    be.stop().await;
}
