//! The per-backend concurrency cap: FIFO admission, shedding when full or after the queue
//! timeout, with Retry-After.

use std::time::Duration;

use balancer::testing::{Client, FakeBackend, Reply};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::task::JoinHandle;

use crate::support::{TestBalancer, config, row, wait_until};

fn send_seq(addr: std::net::SocketAddr, seq: usize, delay_ms: u64) -> JoinHandle<Reply> {
    tokio::spawn(async move {
        let mut c = Client::connect(addr).await.unwrap();
        let req = Request::get(format!("/?delay_ms={delay_ms}"))
            .header("host", "t")
            .header("x-seq", seq.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        c.send(req).await.unwrap()
    })
}

#[tokio::test]
async fn queue_admits_in_fifo_order_and_sheds_when_full() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.limits.max_in_flight_per_backend = 1;
    cfg.limits.max_queue_per_backend = 3;
    let lb = TestBalancer::start(cfg);
    let h = lb.handle.clone();
    let addr = a.addr();
    let mut waiting = Vec::new();
    waiting.push(send_seq(lb.addr, 0, 2000));
    wait_until("first running", Duration::from_secs(10), async || {
        row(&h, addr).unwrap().in_flight == 1
    })
    .await;
    for seq in 1..=3 {
        waiting.push(send_seq(lb.addr, seq, 10));
        wait_until("queued", Duration::from_secs(10), async || {
            row(&h, addr).unwrap().queue == seq
        })
        .await;
    }
    // The queue is full: shed at once.
    let shed = send_seq(lb.addr, 99, 0).await.unwrap();
    assert_eq!(shed.status, 503);
    assert!(shed.header("retry-after").is_some());
    assert!(shed.text().contains("line is full"));
    for w in waiting {
        assert_eq!(w.await.unwrap().status, 200);
    }
    assert_eq!(a.arrivals(), vec!["0", "1", "2", "3"]);
    assert_eq!(a.max_in_flight(), 1, "the cap held");
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn queue_timeout_gives_503_with_retry_after() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.limits.max_in_flight_per_backend = 1;
    cfg.timeouts.queue = Duration::from_millis(100);
    let lb = TestBalancer::start(cfg);
    let h = lb.handle.clone();
    let addr = a.addr();
    let first = send_seq(lb.addr, 0, 2000);
    wait_until("first running", Duration::from_secs(10), async || {
        row(&h, addr).unwrap().in_flight == 1
    })
    .await;
    let r = send_seq(lb.addr, 1, 0).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(first.await.unwrap().status, 200);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_backend_is_skipped_while_another_has_room() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let mut cfg = config(&[&a, &b]);
    cfg.limits.max_in_flight_per_backend = 1;
    let lb = TestBalancer::start(cfg);
    let h = lb.handle.clone();
    // Round-robin sends the first request to a; it stays busy.
    let busy = send_seq(lb.addr, 0, 2000);
    wait_until("a busy", Duration::from_secs(10), async || {
        row(&h, a.addr()).unwrap().in_flight == 1
    })
    .await;
    // Round-robin would now alternate b, a, b, ...; every request goes to b instead of
    // queueing behind a.
    for seq in 1..=4 {
        let r = send_seq(lb.addr, seq, 0).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-backend").unwrap(), "b");
    }
    assert_eq!(busy.await.unwrap().status, 200);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn reloaded_limits_apply_to_new_requests() {
    let a = FakeBackend::start("a").await.unwrap();
    let cfg = config(&[&a]);
    let lb = TestBalancer::start(cfg.clone());
    let mut capped = cfg;
    capped.limits.max_in_flight_per_backend = 1;
    capped.limits.max_queue_per_backend = 0;
    lb.handle.reload(capped).unwrap();
    let h = lb.handle.clone();
    let addr = a.addr();
    let busy = send_seq(lb.addr, 0, 2000);
    wait_until("a busy", Duration::from_secs(10), async || {
        row(&h, addr).unwrap().in_flight == 1
    })
    .await;
    let shed = send_seq(lb.addr, 1, 0).await.unwrap();
    assert_eq!(shed.status, 503, "the reloaded cap of one holds");
    assert_eq!(busy.await.unwrap().status, 200);
    lb.stop().await.unwrap();
}
