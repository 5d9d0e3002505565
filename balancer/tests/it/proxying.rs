//! What the backend and the client see: forwarding headers, hop-by-hop removal, request ids,
//! pooled keep-alive, h2c, and large bodies streamed both ways.

use std::time::Duration;

use balancer::testing::{Client, FakeBackend, get, get_h2c};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{TestBalancer, config, row, wait_until};

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_removed() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut client = Client::connect(lb.addr).await.unwrap();
    let req = Request::get("/hello?x=1")
        .header("host", "tickets.example")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-request-id", "req-42")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = client.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(seen["path"], "/hello?x=1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "tickets.example");
    assert_eq!(h["host"], "tickets.example");
    assert_eq!(h["x-request-id"], "req-42");
    assert!(
        h.get("x-hop").is_none(),
        "connection-named header leaked: {h}"
    );
    assert!(h.get("keep-alive").is_none());
    // Without a request id one is generated.
    let r = client.get("/").await.unwrap();
    let id = r.json()["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..20 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    let status = row(&lb.handle, a.addr()).unwrap();
    assert_eq!(
        status.idle_connections, 1,
        "one connection reused for sequential requests"
    );
    assert_eq!(status.requests_total, 20);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied_to_http1() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let r = get_h2c(lb.addr, "/over-h2").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/over-h2");
    assert_eq!(r.json()["headers"]["host"], lb.addr.to_string());
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.limits.max_body_bytes = 64 * 1024 * 1024;
    let lb = TestBalancer::start(cfg);
    let mut client = Client::connect(lb.addr).await.unwrap();
    let big = Bytes::from(vec![b'z'; 8 * 1024 * 1024]);
    let req = Request::post("/echo")
        .header("host", "t")
        .body(Full::new(big.clone()))
        .unwrap();
    let r = client.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());
    assert!(r.body == big);
    let r = client.get("/bytes/20000000").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), 20_000_000);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn upstream_header_timeout_gives_504() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.timeouts.upstream_header = Duration::from_millis(100);
    cfg.passive.failures = 0;
    let lb = TestBalancer::start(cfg);
    let r = get(lb.addr, "/?delay_ms=2000").await.unwrap();
    assert_eq!(r.status, 504);
    let h = lb.handle.clone();
    let addr = a.addr();
    wait_until(
        "slow request finished at the backend",
        Duration::from_secs(10),
        async || a.in_flight() == 0,
    )
    .await;
    assert!(row(&h, addr).unwrap().in_flight == 0);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn upgrade_is_passed_through_as_a_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "connection closed during the 101 head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
    drop(s);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn idle_upgrade_tunnel_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.timeouts.idle = Duration::from_millis(300);
    let lb = TestBalancer::start(cfg);
    let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    // Read everything until the balancer closes the quiet tunnel (bounded).
    let mut all = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await;
    assert!(closed.is_ok(), "idle tunnel was not closed");
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 101"));
    lb.stop().await.unwrap();
}
