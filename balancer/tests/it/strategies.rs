//! Each strategy's distribution over real backends.

use std::time::Duration;

use balancer::testing::{Client, FakeBackend};
use balancer::{BackendSpec, Strategy};

use crate::support::{TestBalancer, config};

#[tokio::test]
async fn round_robin_is_exact_within_weights() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let c = FakeBackend::start("c").await.unwrap();
    let mut cfg = config(&[&a, &b, &c]);
    cfg.backends = vec![
        BackendSpec::new(a.addr()).with_weight(3),
        BackendSpec::new(b.addr()).with_weight(2),
        BackendSpec::new(c.addr()),
    ];
    cfg.strategy = Strategy::RoundRobin;
    let lb = TestBalancer::start(cfg);
    let mut client = Client::connect(lb.addr).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..60 {
        let r = client.get("/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        seen.push(r.header("x-backend").unwrap());
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (30, 20, 10));
    // Smooth: the heavy backend never takes more than two in a row for weights 3,2,1.
    assert!(
        !seen.windows(3).any(|w| w.iter().all(|n| n == "a")),
        "{seen:?}"
    );
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn least_conn_prefers_the_idle_backend_under_skewed_latency() {
    let slow = FakeBackend::start("slow").await.unwrap();
    let fast = FakeBackend::start("fast").await.unwrap();
    slow.set_latency(Duration::from_millis(200));
    let mut cfg = config(&[&slow, &fast]);
    cfg.strategy = Strategy::LeastConn;
    let lb = TestBalancer::start(cfg);
    let addr = lb.addr;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await.unwrap();
            for _ in 0..5 {
                assert_eq!(c.get("/").await.unwrap().status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(slow.hits() + fast.hits(), 40);
    assert!(
        fast.hits() > 2 * slow.hits(),
        "fast {} slow {}",
        fast.hits(),
        slow.hits()
    );
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn p2c_spreads_over_every_backend() {
    let backends = [
        FakeBackend::start("a").await.unwrap(),
        FakeBackend::start("b").await.unwrap(),
        FakeBackend::start("c").await.unwrap(),
    ];
    let mut cfg = config(&[&backends[0], &backends[1], &backends[2]]);
    cfg.strategy = Strategy::P2c;
    let lb = TestBalancer::start(cfg);
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..90 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    for b in &backends {
        assert!(b.hits() >= 10, "{} got only {}", b.name(), b.hits());
    }
    lb.stop().await.unwrap();
}
