//! The whole stack in one process: a crowd through the balancer, every invariant checked, and
//! a restart on the same data dir that keeps every event and purchase.

use std::sync::Arc;
use std::time::Duration;

use ticket_stack::rush::{Mailbox, NewEvent, RushConfig, Target};
use ticket_stack::stack::{self, StackConfig};
use ticket_svc::access::{Access, AccessConfig, Email, KeyRing, OrganizerTokens, unix_now};
use ticket_svc::domain::EventSpec;
use ticket_svc::store::Store;
use tokio_util::sync::CancellationToken;

/// `Authorization: Bearer SESSION` for `email`, signed with the stack's own key (as its APIs
/// sign one after a login).
fn session(s: &stack::Stack, email: &str) -> http::HeaderValue {
    let keys = KeyRing::parse(&[s.credentials.signing_key.as_str()]).unwrap();
    let access = Access::new(AccessConfig::new(
        keys,
        OrganizerTokens::parse::<&str>(&[]).unwrap(),
    ));
    let session = access.session_for(&Email::parse(email).unwrap(), unix_now());
    http::HeaderValue::from_str(&format!("Bearer {}", session.token)).unwrap()
}

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
    let mailbox = Arc::new(Mailbox::bind(([127, 0, 0, 1], 0).into()).await.unwrap());
    let mut with_mailbox = config(dir.path());
    with_mailbox.login_sender = mailbox.url();
    let s = stack::start(with_mailbox).await.unwrap();
    // The organizer creates the event through the balancer, with the token the stack made.
    let targets = vec![
        Target::resolve(&format!("http://{}", s.public))
            .await
            .unwrap(),
    ];
    let id = ticket_stack::rush::create_event(
        &targets,
        &s.credentials.organizer_authorization(),
        &NewEvent::new("DJ night", 300, 4),
    )
    .await
    .unwrap();
    let refused = ticket_stack::rush::create_event(
        &targets,
        "Bearer not-the-organizer-token",
        &NewEvent::new("x", 1, 1),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let event = s.store.event(id).await.unwrap().unwrap();
    let report = ticket_stack::rush::run(
        RushConfig {
            targets,
            event: event.id,
            buyers: 400,
            concurrency: 32,
            rate: None,
            verify: true,
            seed: 7,
            request_timeout: Duration::from_secs(10),
            verify_timeout: Duration::from_secs(60),
            show_progress: false,
            resends: RushConfig::DEFAULT_RESENDS,
            require_answers: true,
        },
        Arc::clone(&mailbox),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.logins, 400, "{report}");
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

/// Forwards one connection to `to` and cuts it once the answer's head is back, before the client
/// sees a byte of it: a balancer that died after its API accepted the purchase. Hands over the
/// answer it swallowed.
async fn cutting_proxy(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut upstream = tokio::net::TcpStream::connect(to).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut request = Vec::new();
        // The crowd's request: a head with Content-Length and a small JSON body.
        while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"}") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client sent its whole request");
            request.extend_from_slice(&buf[..n]);
        }
        upstream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
            let n = upstream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stack answered");
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(answer).unwrap()
    });
    (addr, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_whose_answer_was_lost_is_sent_again_on_another_address_and_sold_once() {
    use bytes::Bytes;
    use http::{HeaderName, HeaderValue, Method, StatusCode};
    let dir = tempfile::tempdir().unwrap();
    let s = stack::start(config(dir.path())).await.unwrap();
    let event = s
        .store
        .create_event(&EventSpec::new("DJ night", 10, 4).unwrap())
        .await
        .unwrap();
    let (proxy, cut) = cutting_proxy(s.public).await;
    let targets = vec![
        Target::resolve(&format!("http://{proxy}")).await.unwrap(),
        Target::resolve(&format!("http://{}", s.public))
            .await
            .unwrap(),
    ];
    let mut route = ticket_stack::rush::Route::new(&targets, 0, Duration::from_secs(5), 3);
    let key = [
        (
            HeaderName::from_static("idempotency-key"),
            HeaderValue::from_static("lost-answer-1"),
        ),
        (http::header::AUTHORIZATION, session(&s, "ann@example.org")),
    ];
    let mut failed = Vec::new();
    let (status, body) = route
        .send(
            &Method::POST,
            |prefix| format!("{prefix}/events/{}/purchases", event.id),
            &key,
            &Bytes::from_static(br#"{"quantity":3}"#),
            true,
            |a| failed.push(a.answer.is_err()),
        )
        .await
        .unwrap();
    assert_eq!(
        failed,
        [true, false],
        "lost once, then answered on the other address"
    );
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(route.current(), 1);
    let lost = cut.await.unwrap();
    assert!(
        lost.starts_with("HTTP/1.1 202"),
        "the first send was accepted: {lost}"
    );
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = answer["purchase_id"].as_str().unwrap();
    assert!(
        lost.contains(id),
        "both sends name one purchase: {lost} / {answer}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = route.get(&format!("/purchases/{id}")).await.unwrap();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status == StatusCode::OK && seen["status"] == "confirmed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sold = s.store.event(event.id).await.unwrap().unwrap().sold;
    assert_eq!(sold, 3, "sold once");
    s.stop().await;
}
