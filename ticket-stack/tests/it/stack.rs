//! The whole stack in one process: a crowd through the balancer, every invariant checked, and
//! a restart on the same data dir that keeps every event and purchase.

use std::time::Duration;

use ticket_stack::rush::{RushConfig, Target};
use ticket_stack::stack::{self, StackConfig};
use ticket_svc::domain::EventSpec;
use ticket_svc::store::Store;
use tokio_util::sync::CancellationToken;

fn config(dir: &std::path::Path) -> StackConfig {
    let mut c = StackConfig::new(dir);
    c.listen = ([127, 0, 0, 1], 0).into();
    c.admin_listen = ([127, 0, 0, 1], 0).into();
    c.apis = 2;
    c.workers = 2;
    c.partitions = 4;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_through_the_whole_stack_keeps_every_invariant_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = stack::start(config(dir.path())).await.unwrap();
    let event = s
        .store
        .create_event(&EventSpec::new("DJ night", 300, 4).unwrap())
        .await
        .unwrap();
    let report = ticket_stack::rush::run(
        RushConfig {
            target: Target::resolve(&format!("http://{}", s.public))
                .await
                .unwrap(),
            event: event.id,
            buyers: 400,
            concurrency: 32,
            rate: None,
            verify: true,
            seed: 7,
            request_timeout: Duration::from_secs(10),
            verify_timeout: Duration::from_secs(60),
            show_progress: false,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report}");
    let sold = s.store.event(event.id).await.unwrap().unwrap().sold;
    assert_eq!(sold, 300, "400 buyers of 1-4 tickets sell out 300");
    // Admin and metrics listeners answer.
    assert_eq!(
        plumbing::probe::status(s.admin.unwrap(), "/status", Duration::from_secs(2))
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        plumbing::probe::status(
            s.broker_metrics.unwrap(),
            "/metrics",
            Duration::from_secs(2)
        )
        .await
        .unwrap(),
        200
    );
    // The workers' listener shows the supervisor's gauges, starting at the minimum.
    let body = plumbing::testing::http_get(s.worker_metrics.unwrap(), "/metrics")
        .await
        .unwrap()
        .body;
    assert!(body.contains("ticket_supervisor_workers 2"), "{body}");
    assert!(body.contains("ticket_supervisor_lag"), "{body}");
    assert!(body.contains("ticket_supervisor_busy_partitions"), "{body}");
    s.stop().await;

    let s = stack::start(config(dir.path())).await.unwrap();
    let again = s.store.event(event.id).await.unwrap().unwrap();
    assert_eq!(again.sold, 300, "a restart keeps every sale");
    s.stop().await;
}
