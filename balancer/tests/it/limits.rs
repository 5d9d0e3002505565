//! Limits and request hygiene: 431, 413, smuggling 400s, slowloris, rate limiting. The
//! balancer keeps serving other clients throughout.

use std::net::SocketAddr;
use std::time::Duration;

use balancer::testing::{FakeBackend, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestBalancer, config};

/// Writes `raw` and reads until the server closes (bounded).
async fn raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn oversized_header_gets_431() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let big = "x".repeat(40 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let resp = raw(lb.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 431, "{resp}");
    assert_eq!(a.hits(), 0);
    assert_eq!(get(lb.addr, "/").await.unwrap().status, 200);
    let metrics = lb.handle.metrics_text();
    assert!(
        metrics.contains(r#"balancer_rejected_requests_total{reason="header_too_large"} 1"#),
        "the 431 is counted:\n{metrics}"
    );
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_body_gets_413_declared_or_streamed() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.limits.max_body_bytes = 1000;
    let lb = TestBalancer::start(cfg);
    let body = "y".repeat(2000);
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{body}"
    );
    let resp = raw(lb.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert_eq!(a.hits(), 0, "never forwarded");
    // Chunked, no declared length: cut off while streaming.
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7d0\r\n{body}\r\n0\r\n\r\n"
    );
    let resp = raw(lb.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    // Within the limit passes.
    let req =
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let resp = raw(lb.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.ends_with("hello"));
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn smuggling_attempts_get_400_and_are_never_forwarded() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let cases: [&[u8]; 5] = [
        // CL.TE
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        // TE.CL
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        // differing duplicate Content-Length
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        // Transfer-Encoding not ending in chunked
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        // invalid chunk size
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ];
    for (i, case) in cases.iter().enumerate() {
        let resp = raw(lb.addr, case).await;
        assert_eq!(status_of(&resp), 400, "case {i}: {resp}");
    }
    assert_eq!(a.hits(), 0, "no ambiguous request reached the backend");
    assert_eq!(get(lb.addr, "/").await.unwrap().status, 200);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn slowloris_is_cut_off_at_the_header_timeout() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.timeouts.header_read = Duration::from_millis(300);
    let lb = TestBalancer::start(cfg);
    let mut slow = TcpStream::connect(lb.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // Another client is served while the slow one dawdles.
    assert_eq!(get(lb.addr, "/").await.unwrap().status, 200);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection was not closed");
    assert_eq!(a.hits(), 1);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.limits.rate_per_sec = 0.5;
    cfg.limits.rate_burst = 3;
    let lb = TestBalancer::start(cfg);
    let mut client = balancer::testing::Client::connect(lb.addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    let r = client.get("/").await.unwrap();
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(a.hits(), 3);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.limits.max_connections = 1;
    let lb = TestBalancer::start(cfg);
    let mut first = balancer::testing::Client::connect(lb.addr).await.unwrap();
    assert_eq!(first.get("/").await.unwrap().status, 200);
    // The second connection sits in the backlog while the first is open.
    let addr = lb.addr;
    let mut second = tokio::spawn(async move { get(addr, "/").await.unwrap().status });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(
        waited.is_err(),
        "second connection was served past the limit"
    );
    let metrics = get(lb.admin, "/metrics").await.unwrap().text();
    assert!(
        metrics.contains("balancer_downstream_connections 1\n"),
        "{metrics}"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(status, 200);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let resp = raw(
        lb.addr,
        b"GET /first?delay_ms=100 HTTP/1.1\r\nHost: t\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 2, "{resp}");
    let first = resp.find("/first").unwrap();
    let second = resp.find("/second").unwrap();
    assert!(first < second, "{resp}");
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limit_keys_on_forwarded_for_from_trusted_proxies() {
    use bytes::Bytes;
    use http::Request;
    use http_body_util::Full;
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.limits.rate_per_sec = 0.01;
    cfg.limits.rate_burst = 1;
    cfg.limits.trust_forwarded = vec!["127.0.0.1".parse().unwrap()];
    let lb = TestBalancer::start(cfg);
    let mut client = balancer::testing::Client::connect(lb.addr).await.unwrap();
    let from = |ip: &str| {
        Request::get("/")
            .header("host", "t")
            .header("x-forwarded-for", ip)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(client.send(from("198.51.100.1")).await.unwrap().status, 200);
    assert_eq!(client.send(from("198.51.100.1")).await.unwrap().status, 429);
    // Another buyer behind the same trusted proxy has its own bucket.
    assert_eq!(client.send(from("198.51.100.2")).await.unwrap().status, 200);
    lb.stop().await.unwrap();
}
