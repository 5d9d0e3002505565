//! The balancer's own HTTP/1.1 server, byte by byte on raw sockets: keep-alive and
//! pipelining, bodies that arrive late or stall, HTTP/1.0 clients, HEAD, response framing,
//! refusals, and the hand-over to hyper's server mid-connection for what it does not take.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use balancer::testing::FakeBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestBalancer, config};

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// One client connection that reads responses as they come (pipelined ones too).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at EOF. Bounded: a test never hangs here.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("the balancer answered within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response to a request of `method` (HEAD has no body).
    async fn response(&mut self, method: &str) -> Raw {
        let head_len = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut slots);
        resp.parse(&self.buf[..head_len]).unwrap();
        let status = resp.code.unwrap();
        let headers: HashMap<String, String> = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        self.buf.drain(..head_len);
        let no_body = method == "HEAD" || status == 204 || status == 304 || status < 200;
        let body = if no_body {
            Vec::new()
        } else if let Some(len) = headers.get("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "connection closed inside a body");
            }
            self.buf.drain(..len).collect()
        } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            self.chunked().await
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        Raw {
            status,
            headers,
            body,
        }
    }

    async fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(self.fill().await, "connection closed inside a chunk size");
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(),
                16,
            )
            .unwrap();
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                assert!(self.fill().await, "connection closed inside a chunk");
            }
            body.extend(self.buf.drain(..size));
            assert_eq!(self.buf.drain(..2).collect::<Vec<u8>>(), b"\r\n");
            if size == 0 {
                return body;
            }
        }
    }

    /// The server closed the connection (nothing more arrives).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

fn json(r: &Raw) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let one = c.response("GET").await;
    let two = c.response("GET").await;
    assert_eq!((one.status, two.status), (200, 200));
    assert_eq!(json(&one)["path"], "/one");
    assert_eq!(json(&two)["path"], "/two");
    assert!(one.headers.contains_key("date"), "{:?}", one.headers);
    assert!(!one.headers.contains_key("connection"), "{:?}", one.headers);
    // Still open: a third request on it.
    c.send(b"GET /three HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(json(&c.response("GET").await)["path"], "/three");
    assert_eq!(a.hits(), 3);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_arriving_after_its_head_is_forwarded_whole() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut c = Conn::open(lb.addr).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        a.hits(),
        0,
        "nothing is forwarded before the whole body is here"
    );
    c.send(b" world").await;
    let r = c.response("POST").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world");
    assert_eq!(r.headers["content-length"], "11");
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_is_never_forwarded() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.timeouts.idle = Duration::from_millis(300);
    let lb = TestBalancer::start(cfg);
    let mut c = Conn::open(lb.addr).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    let r = c.response("POST").await;
    assert_eq!(r.status, 408);
    assert_eq!(r.headers["connection"], "close");
    assert!(c.closed().await);
    assert_eq!(a.hits(), 0);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn http10_clients_get_a_close_unless_they_ask_for_keep_alive() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET /plain HTTP/1.0\r\nHost: t\r\n\r\n").await;
    let r = c.response("GET").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["connection"], "close");
    assert!(c.closed().await);

    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET /kept HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response("GET").await;
    assert_eq!(r.headers["connection"], "keep-alive");
    // A body of unknown length cannot be chunked to HTTP/1.0: it runs until close.
    c.send(b"GET /stream/70000 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response("GET").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["connection"], "close");
    assert_eq!(r.body.len(), 70_000);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_of_unknown_length_are_chunked_and_head_sends_no_body() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET /stream/150000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let r = c.response("GET").await;
    assert_eq!(r.headers["transfer-encoding"], "chunked");
    assert_eq!(r.body.len(), 150_000);
    assert!(r.body.iter().all(|b| *b == b'x'));
    // HEAD: the length a GET would get, and not a byte of body (the next response on the
    // connection would be garbled otherwise).
    c.send(b"HEAD /bytes/100 HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let head = c.response("HEAD").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "100");
    let after = c.response("GET").await;
    assert_eq!(json(&after)["path"], "/after");
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn requests_it_does_not_take_go_to_hyper_on_the_same_connection() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(json(&c.response("GET").await)["path"], "/first");
    // A chunked body: hyper's server takes the connection from this request on, with the
    // bytes already read; the following pipelined request is served too.
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /third HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let echoed = c.response("POST").await;
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.body, b"hello");
    assert_eq!(json(&c.response("GET").await)["path"], "/third");

    // Expect: 100-continue is hyper's to answer.
    let mut c = Conn::open(lb.addr).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.response("POST").await;
    assert_eq!(interim.status, 100);
    c.send(b"ping").await;
    let r = c.response("POST").await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"ping".as_slice()));
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_heads_get_400_and_are_counted() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
        .await;
    let r = c.response("GET").await;
    assert_eq!(r.status, 400);
    assert!(c.closed().await);
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX: \x01\r\n\r\n")
        .await;
    assert_eq!(c.response("GET").await.status, 400);
    assert_eq!(a.hits(), 0);
    let metrics = lb.handle.metrics_text();
    assert!(
        metrics.contains(r#"balancer_rejected_requests_total{reason="bad_request"} 2"#),
        "{metrics}"
    );
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn the_balancers_own_errors_are_framed_and_close_when_they_must() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    a.stop().await;
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = c.response("GET").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.headers["content-length"].parse::<usize>().unwrap(),
        r.body.len()
    );
    assert_eq!(r.headers["retry-after"], "1");
    // A client error's connection cannot be trusted after it: closed.
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET / HTTP/1.1\r\n\r\n").await;
    let r = c.response("GET").await;
    assert_eq!(r.status, 400, "no Host");
    assert_eq!(r.headers["connection"], "close");
    assert!(c.closed().await);
    lb.stop().await.unwrap();
}
