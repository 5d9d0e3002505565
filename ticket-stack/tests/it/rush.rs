//! The crowd against a real API (port 0) with workers, verifying every invariant.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use ticket_stack::rush::{Codes, Mailbox, RushConfig, Target, run};
use ticket_svc::domain::EventId;
use ticket_svc::http::ApiConfig;
use ticket_svc::queue::MemoryQueueConfig;
use ticket_svc::worker::{Worker, WorkerConfig};

use ticket_svc::testing::{
    TestApi, TestDeps, create_event, start_api_with, test_access_sending_to, test_deps,
};

/// A mailbox for the crowd's login codes, and an API that sends them there.
async fn api_with_mailbox(deps: &TestDeps) -> (TestApi, Arc<Mailbox>) {
    let mailbox = Arc::new(Mailbox::bind(([127, 0, 0, 1], 0).into()).await.unwrap());
    let api = start_api_with(
        deps,
        ApiConfig::default(),
        test_access_sending_to(&mailbox.url()),
    )
    .await;
    (api, mailbox)
}

fn config(target: Target, event: i64, buyers: u64, rate: Option<f64>) -> RushConfig {
    RushConfig {
        targets: vec![target],
        event: EventId(event),
        buyers,
        concurrency: 16,
        rate,
        verify: true,
        seed: 42,
        request_timeout: Duration::from_secs(5),
        verify_timeout: Duration::from_secs(20),
        show_progress: false,
        resends: RushConfig::DEFAULT_RESENDS,
        require_answers: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_sells_out_fairly_and_verifies() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let (api, mailbox) = api_with_mailbox(&b).await;
    let shutdown = CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..2 {
        let w = Worker::new(
            b.store.clone(),
            b.queue.clone(),
            b.metrics.clone(),
            WorkerConfig {
                fetch_wait: Duration::from_millis(50),
                ..Default::default()
            },
            format!("w{i}"),
        );
        let token = shutdown.clone();
        workers.spawn(async move { w.run(token).await });
    }
    let event = create_event(api.addr, 150, 4).await;
    let target = Target::resolve(&format!("http://{}", api.addr))
        .await
        .unwrap();

    let report = run(
        config(target.clone(), event, 400, None),
        Arc::clone(&mailbox),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report}");
    let v = report.verification.as_ref().unwrap();
    assert_eq!(
        v.confirmed_tickets, 150,
        "a crowd this size sells out:\n{report}"
    );
    assert!(v.rejected.get("sold_out").copied().unwrap_or(0) > 0);
    assert!(report.statuses.get(&202).copied().unwrap_or(0) >= report.accepted);
    assert!(
        report.statuses.contains_key(&400),
        "some bad requests were sent"
    );
    assert!(
        report.statuses.contains_key(&401),
        "some forged sessions were sent, and refused"
    );
    // Every buyer logged in through the API, with a code from the mailbox.
    assert_eq!((report.logins, report.login_failures), (400, 0));
    assert_eq!(report.transport_errors, 0);
    let text = report.to_string();
    assert!(text.contains("p99"), "{text}");
    assert!(text.contains("all hold"), "{text}");
    // The timeline adds up to the totals; sold was sampled from 0 up to the sell-out.
    let seconds = report.timeline.seconds();
    assert_eq!(seconds.iter().map(|s| s.sent).sum::<u64>(), report.requests);
    assert_eq!(
        seconds.iter().map(|s| s.accepted).sum::<u64>(),
        report.accepted
    );
    let answered: u64 = report.statuses.values().sum();
    assert_eq!(
        seconds.iter().map(|s| s.latency.len()).sum::<u64>(),
        answered + report.transport_errors
    );
    assert_eq!(report.sold.first().map(|s| s.sold), Some(0));
    assert_eq!(report.sold.last().map(|s| s.sold), Some(150));
    assert!(report.sold.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(
        report.decided_after.is_some(),
        "every purchase became final"
    );
    assert!(report.last_in_line_decided_after.is_some());
    assert!(text.contains("after the rush's last answer"), "{text}");

    // Open model: a fixed rate, latency from the intended send time. The codes are read from
    // the mailbox over HTTP this time, as a crowd sharing a `ticket-svc mailbox` reads them.
    let event = create_event(api.addr, 10, 2).await;
    let remote = Codes::Remote(
        Target::resolve(&format!("http://{}", mailbox.addr()))
            .await
            .unwrap(),
    );
    let report = run(
        config(target, event, 60, Some(600.0)),
        remote,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report}");
    assert!(
        report.elapsed >= Duration::from_millis(90),
        "60 buyers at 600/s take ~100 ms"
    );
    assert_eq!((report.logins, report.login_failures), (60, 0));

    shutdown.cancel();
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_goes_through_a_waiting_room_in_line_order_with_permits() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let (api, mailbox) = api_with_mailbox(&b).await;
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        b.store.clone(),
        b.queue.clone(),
        b.metrics.clone(),
        WorkerConfig {
            fetch_wait: Duration::from_millis(50),
            ..Default::default()
        },
        "w",
    );
    let work = tokio::spawn({
        let stop = shutdown.clone();
        async move { worker.run(stop).await }
    });
    // The sale opens in 2 s, behind a line admitting 300 a second and asking each joiner a
    // small proof of work.
    let opens_at = ticket_svc::domain::UnixMillis(ticket_svc::domain::UnixMillis::now().0 + 2_000);
    let r = ticket_svc::testing::post_json_as(
        api.addr,
        "/events",
        &ticket_svc::testing::organizer(),
        serde_json::json!({
            "name": "DJ night", "tickets": 200, "max_per_buyer": 4,
            "opens_at": opens_at.to_string(),
            "waiting_room": {"admit_per_s": 300, "proof_of_work_bits": 6}
        }),
    )
    .await;
    assert_eq!(r.status, http::StatusCode::CREATED, "{}", r.text);
    let event = r.json["id"].as_i64().unwrap();
    let target = Target::resolve(&format!("http://{}", api.addr))
        .await
        .unwrap();
    let mut rush = config(target.clone(), event, 300, None);
    rush.concurrency = 32;
    let report = run(rush, Arc::clone(&mailbox), CancellationToken::new())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report}");
    let line = report.line.as_ref().unwrap();
    assert_eq!(
        (line.joined, line.admitted, line.failed),
        (300, 300, 0),
        "{report}"
    );
    assert_eq!(line.proofs, 300, "every joiner did the work");
    assert!(line.out_of_order(Duration::from_millis(250)).is_empty());
    assert_eq!(
        report.verification.as_ref().unwrap().confirmed_tickets,
        200,
        "{report}"
    );
    assert!(
        report.statuses.contains_key(&403),
        "some buyers tried without their permit, and were refused: {report}"
    );
    assert!(
        report.to_string().contains("300 admitted with a permit"),
        "{report}"
    );
    // A waiting room paces the crowd: an open-model rate is refused.
    let err = run(
        config(target, event, 10, Some(100.0)),
        Arc::clone(&mailbox),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("waiting room"), "{err}");
    shutdown.cancel();
    work.await.unwrap();
    api.stop().await;
}

#[tokio::test]
async fn a_rush_against_an_unknown_event_says_so() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let (api, mailbox) = api_with_mailbox(&b).await;
    let target = Target::resolve(&format!("http://{}", api.addr))
        .await
        .unwrap();
    let err = run(
        config(target, 999, 10, None),
        mailbox,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("999"), "{err}");
    api.stop().await;
}
