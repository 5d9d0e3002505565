//! Backends dying and coming back: retries hide the failure, passive and active checks take
//! the backend out, the health checker brings it back.

use std::time::Duration;

use balancer::testing::{Client, FakeBackend, get};

use crate::support::{TestBalancer, config, row, wait_until};

#[tokio::test]
async fn killed_backend_is_invisible_to_clients_then_readmitted() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let c = FakeBackend::start("c").await.unwrap();
    let b_addr = b.addr();
    let cfg = config(&[&a, &b, &c]);
    let lb = TestBalancer::start(cfg);
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..9 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    assert_eq!(b.hits(), 3);
    b.stop().await;
    // Every request still succeeds: connect-refused attempts move to another backend.
    for i in 0..30 {
        let r = client.get("/").await.unwrap();
        assert_eq!(r.status, 200, "request {i} after the kill: {}", r.text());
        assert_ne!(r.header("x-backend").as_deref(), Some("b"));
    }
    let h = lb.handle.clone();
    wait_until(
        "b marked down by the health checker",
        Duration::from_secs(10),
        async || row(&h, b_addr).is_some_and(|r| !r.healthy && !r.available),
    )
    .await;
    let b = FakeBackend::start_on("b", b_addr).await.unwrap();
    wait_until("b re-admitted", Duration::from_secs(10), async || {
        row(&h, b_addr).is_some_and(|r| r.available)
    })
    .await;
    for _ in 0..30 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    assert!(b.hits() >= 5, "b got {} after coming back", b.hits());
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn failing_health_check_takes_a_backend_out_and_back() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let lb = TestBalancer::start(config(&[&a, &b]));
    let h = lb.handle.clone();
    b.set_healthy(false);
    wait_until("b down", Duration::from_secs(10), async || {
        row(&h, b.addr()).is_some_and(|r| !r.healthy)
    })
    .await;
    let before = b.hits();
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..10 {
        assert_eq!(
            client.get("/").await.unwrap().header("x-backend").unwrap(),
            "a"
        );
    }
    assert_eq!(b.hits(), before);
    b.set_healthy(true);
    wait_until("b up", Duration::from_secs(10), async || {
        row(&h, b.addr()).is_some_and(|r| r.healthy)
    })
    .await;
    for _ in 0..10 {
        client.get("/").await.unwrap();
    }
    assert!(b.hits() > before);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn consecutive_5xx_eject_a_backend() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let mut cfg = config(&[&a, &b]);
    cfg.passive.failures = 2;
    cfg.passive.eject_for = Duration::from_secs(30);
    // No check during the test: a passing one would end the ejection.
    cfg.health.interval = Duration::from_secs(60);
    let lb = TestBalancer::start(cfg);
    b.fail_next(100);
    let mut client = Client::connect(lb.addr).await.unwrap();
    let mut failures = 0;
    for _ in 0..20 {
        if client.get("/").await.unwrap().status == 500 {
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "ejected after two 5xx in a row");
    assert!(row(&lb.handle, b.addr()).unwrap().ejected);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn a_passing_health_check_ends_a_passive_ejection() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let mut cfg = config(&[&a, &b]);
    cfg.passive.failures = 2;
    cfg.passive.eject_for = Duration::from_secs(60);
    let lb = TestBalancer::start(cfg);
    let h = lb.handle.clone();
    // A burst of 500s from b (its health endpoint still passes) ejects it.
    b.fail_next(2);
    let mut client = Client::connect(lb.addr).await.unwrap();
    wait_until("b ejected", Duration::from_secs(10), async || {
        let _ = client.get("/").await;
        row(&h, b.addr()).is_some_and(|r| r.ejected)
    })
    .await;
    // The next passing check (every 50 ms here) ends it, long before its 60 s.
    wait_until("b back", Duration::from_secs(5), async || {
        row(&h, b.addr()).is_some_and(|r| !r.ejected && r.available)
    })
    .await;
    let before = b.hits();
    for _ in 0..10 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    assert!(
        b.hits() > before,
        "b got no traffic after its ejection ended"
    );
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn every_backend_ejected_at_once_is_tried_anyway() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let mut cfg = config(&[&a, &b]);
    cfg.passive.failures = 1;
    cfg.passive.eject_for = Duration::from_secs(60);
    // No check during the test: only the panic can bring traffic back.
    cfg.health.interval = Duration::from_secs(60);
    let lb = TestBalancer::start(cfg);
    let h = lb.handle.clone();
    // A shared dependency's hiccup: one 500 from each ejects both.
    a.fail_next(1);
    b.fail_next(1);
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..2 {
        assert_eq!(client.get("/").await.unwrap().status, 500);
    }
    let status = h.status();
    assert!(status.backends.iter().all(|r| r.ejected), "{status:?}");
    assert!(status.panic, "every backend is out: {status:?}");
    // Tried anyway: the site stays up, and the metric says why.
    for _ in 0..4 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    assert!(
        a.hits() >= 2 && b.hits() >= 2,
        "{} and {}",
        a.hits(),
        b.hits()
    );
    let metrics = h.metrics_text();
    assert!(
        metrics.contains("balancer_panic_requests_total 4"),
        "{metrics}"
    );
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn a_balancer_started_before_its_backends_serves_as_soon_as_they_answer() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let (a_addr, b_addr) = (a.addr(), b.addr());
    let mut cfg = config(&[&a, &b]);
    a.stop().await;
    b.stop().await;
    cfg.passive.failures = 1;
    cfg.passive.eject_for = Duration::from_secs(60);
    // The checker takes a while to call a backend down: the backends answer before it does.
    cfg.health.fall = 1000;
    let lb = TestBalancer::start(cfg);
    let h = lb.handle.clone();
    // An early request: every backend refuses it, and each is ejected.
    assert_eq!(get(lb.addr, "/").await.unwrap().status, 503);
    assert!(h.status().backends.iter().all(|r| r.ejected));
    let _a = FakeBackend::start_on("a", a_addr).await.unwrap();
    let _b = FakeBackend::start_on("b", b_addr).await.unwrap();
    // Served again within moments, not after the ejections' 60 s.
    wait_until("served again", Duration::from_secs(5), async || {
        get(lb.addr, "/").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    wait_until("both ejections ended", Duration::from_secs(5), async || {
        let s = h.status();
        !s.panic && s.backends.iter().all(|r| r.available)
    })
    .await;
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn all_backends_down_gives_503_with_a_clear_body() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let lb = TestBalancer::start(config(&[&a, &b]));
    a.stop().await;
    b.stop().await;
    // Before the checker notices: every connect is refused, still 503.
    let r = get(lb.addr, "/").await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("down"), "{}", r.text());
    let h = lb.handle.clone();
    wait_until("all down", Duration::from_secs(10), async || {
        h.status().backends.iter().all(|r| !r.available)
    })
    .await;
    let r = get(lb.addr, "/").await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert!(r.text().contains("no backend available"));
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn retry_on_5xx_for_idempotent_requests_when_configured() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let mut cfg = config(&[&a, &b]);
    cfg.retry.on_5xx = true;
    cfg.passive.failures = 0;
    let lb = TestBalancer::start(cfg);
    let mut client = Client::connect(lb.addr).await.unwrap();
    // Both backends answer 503 here: one retry on the other backend, then its 503 is passed on.
    let r = client.get("/status/503").await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(a.hits() + b.hits(), 2, "one retry on the other backend");
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn deliberate_503_with_retry_after_is_passed_on_not_ejected() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.passive.failures = 2;
    let lb = TestBalancer::start(cfg);
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..5 {
        let r = client.get("/status/503?retry_after").await.unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after").as_deref(), Some("2"));
        assert_eq!(
            r.header("x-backend").as_deref(),
            Some("a"),
            "the backend's own answer"
        );
    }
    assert!(!row(&lb.handle, a.addr()).unwrap().ejected);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn gets_in_flight_at_a_backend_that_dies_are_replayed_elsewhere() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let mut cfg = config(&[&a, &b]);
    cfg.retry.on_5xx = true;
    let lb = TestBalancer::start(cfg);
    // Warm both pools so the requests below go out on reused keep-alive connections.
    let mut warm = Client::connect(lb.addr).await.unwrap();
    for _ in 0..4 {
        assert_eq!(warm.get("/").await.unwrap().status, 200);
    }
    b.set_latency(Duration::from_secs(2));
    let addr = lb.addr;
    let in_flight: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async move { get(addr, "/").await }))
        .collect();
    wait_until("GETs waiting at b", Duration::from_secs(5), async || {
        b.in_flight() >= 2
    })
    .await;
    // b dies with requests written to it and no answer yet: each is a bodiless GET and 502s
    // may be retried, so the balancer sends it to a instead of answering 502 (as nginx's
    // `proxy_next_upstream error` does).
    b.stop().await;
    for t in in_flight {
        let r = t.await.unwrap().unwrap();
        assert_eq!(
            r.status,
            200,
            "a GET in flight at the dead backend: {}",
            r.text()
        );
        assert_eq!(r.header("x-backend").as_deref(), Some("a"));
    }
    lb.stop().await.unwrap();
}
