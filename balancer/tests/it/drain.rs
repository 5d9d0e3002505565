//! Shutdown mid-traffic: in-flight requests complete, new connections are refused, `run`
//! returns Ok.

use std::time::Duration;

use balancer::testing::{Client, FakeBackend};

use crate::support::{TestBalancer, config, row, wait_until};

#[tokio::test]
async fn shutdown_mid_traffic_finishes_in_flight_requests() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut lb = TestBalancer::start(config(&[&a]));
    let addr = lb.addr;
    let mut requests = Vec::new();
    for _ in 0..5 {
        requests.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await.unwrap();
            c.get("/?delay_ms=300").await
        }));
    }
    let h = lb.handle.clone();
    wait_until("all five in flight", Duration::from_secs(10), async || {
        row(&h, a.addr()).unwrap().in_flight == 5
    })
    .await;
    let task = lb.take_task();
    lb.begin_stop();
    for r in requests {
        let reply = r.await.unwrap().expect("in-flight request completed");
        assert_eq!(reply.status, 200);
    }
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run returned after the drain")
        .unwrap();
    assert!(result.is_ok());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}
