//! The HTTP API: each route, each error case, idempotency across two instances, 503s.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use ticket_svc::http::ApiConfig;
use ticket_svc::queue::{MemoryQueueConfig, PurchaseQueue};

use ticket_svc::testing::{
    buyer_id_of, call, create_event, get, organizer, post_json_as, session_of, start_api, test_deps,
};

#[tokio::test]
async fn events_are_created_201_and_read_back() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let r = post_json_as(
        api.addr,
        "/events",
        &organizer(),
        json!({"name": "DJ night", "tickets": 500, "max_per_buyer": 4}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json["id"].as_i64().unwrap();
    assert_eq!(r.json["tickets"], 500);
    assert_eq!(
        r.headers.get("location").unwrap().to_str().unwrap(),
        format!("/events/{id}")
    );
    let g = get(api.addr, &format!("/events/{id}")).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(
        g.json,
        json!({"id": id, "name": "DJ night", "tickets": 500, "max_per_buyer": 4, "sold": 0, "remaining": 500, "opens_at": null, "closes_at": null, "waiting_room": null})
    );
    for missing in ["/events/999999", "/events/abc", "/events/-1"] {
        let r = get(api.addr, missing).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(r.json["error"], "event_not_found");
    }
    api.stop().await;
}

#[tokio::test]
async fn bad_event_requests_get_400_naming_the_problem() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let cases = [
        (json!({"name": "x", "tickets": 5}), "max_per_buyer"),
        (
            json!({"name": "x", "tickets": 5, "max_per_buyer": 1, "price": 3}),
            "price",
        ),
        (
            json!({"name": "x", "tickets": -5, "max_per_buyer": 1}),
            "tickets",
        ),
        (
            json!({"name": "x", "tickets": 5, "max_per_buyer": 0}),
            "max_per_buyer",
        ),
        (
            json!({"name": "", "tickets": 5, "max_per_buyer": 1}),
            "name",
        ),
        (
            json!({"name": "x", "tickets": "many", "max_per_buyer": 1}),
            "string",
        ),
    ];
    for (body, word) in cases {
        let r = post_json_as(api.addr, "/events", &organizer(), body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.contains(word), "{body}: {msg:?} should name {word:?}");
    }
    let r = call(
        api.addr,
        Method::POST,
        "/events",
        &[("authorization", &organizer())],
        "{not json",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"], "bad_json");
    api.stop().await;
}

#[tokio::test]
async fn a_purchase_is_202_with_its_place_in_line_and_pending_until_decided() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let event = create_event(api.addr, 10, 4).await;
    let path = format!("/events/{event}/purchases");
    let first = post_json_as(api.addr, &path, &session_of("ann"), json!({"quantity": 2})).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.json["status"], "pending");
    assert_eq!(first.json["position"], 0);
    let id = first.json["purchase_id"].as_str().unwrap().to_owned();
    assert_eq!(first.json["status_url"], format!("/purchases/{id}"));
    let second = post_json_as(api.addr, &path, &session_of("bob"), json!({"quantity": 1})).await;
    assert_eq!(second.json["position"], 1);

    let p = get(api.addr, &format!("/purchases/{id}")).await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(
        p.json,
        json!({"purchase_id": id, "event_id": event, "buyer": buyer_id_of("ann"), "quantity": 2, "position": 0, "status": "pending"})
    );
    assert_eq!(b.queue.stats().purchases_lag, 2);
    api.stop().await;
}

#[tokio::test]
async fn bad_purchases_get_4xx_naming_the_problem() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(
        &b,
        ApiConfig {
            max_body_bytes: 1024,
            ..Default::default()
        },
    )
    .await;
    let event = create_event(api.addr, 10, 4).await;
    let path = format!("/events/{event}/purchases");
    let cases = [
        (json!({"quantity": 0}), "quantity"),
        (json!({"quantity": -3}), "quantity"),
        (json!({"quantity": 5}), "quantity must be between 1 and 4"),
        (json!({"quantity": 1.5}), "floating point"),
        (json!({}), "missing field `quantity`"),
        (json!({"quantity": 1, "vip": true}), "unknown field `vip`"),
        // The buyer is the session's: a body naming one is told so.
        (json!({"buyer": "a", "quantity": 1}), "drop `buyer`"),
    ];
    let session = session_of("a");
    for (body, words) in cases {
        let r = post_json_as(api.addr, &path, &session, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.contains(words), "{body}: {msg:?} should say {words:?}");
    }
    let r = call(
        api.addr,
        Method::POST,
        &path,
        &[("authorization", &session)],
        "[1,2",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["error"], "bad_json");

    let huge = json!({"quantity": 1, "pad": "x".repeat(4096)});
    let r = post_json_as(api.addr, &path, &session, huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json["error"], "body_too_large");
    assert!(r.json["message"].as_str().unwrap().contains("1024"));

    let r = post_json_as(
        api.addr,
        "/events/424242/purchases",
        &session_of("a"),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        api.addr,
        Method::POST,
        &path,
        &[
            ("idempotency-key", "has space"),
            ("authorization", &session),
        ],
        json!({"quantity": 1}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    assert_eq!(b.queue.stats().purchases_lag, 0, "nothing bad was queued");
    api.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_purchase_ids_are_404() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    for path in [
        "/purchases/not-a-uuid",
        "/purchases/0190d5e4-7f3a-7000-8000-000000000000",
        "/nowhere",
    ] {
        let r = get(api.addr, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(r.json["error"].is_string(), "{path}: JSON error body");
    }
    let r = call(api.addr, Method::DELETE, "/events/1", &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json["error"], "method_not_allowed");
    api.stop().await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_first_purchase_across_instances() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let one = start_api(&b, ApiConfig::default()).await;
    let two = start_api(&b, ApiConfig::default()).await;
    let event = create_event(one.addr, 10, 4).await;
    let path = format!("/events/{event}/purchases");
    let session = session_of("ann");
    let send = |addr, key: &'static str, quantity: u32| {
        let (path, session) = (path.clone(), session.clone());
        async move {
            call(
                addr,
                Method::POST,
                &path,
                &[("idempotency-key", key), ("authorization", &session)],
                json!({"quantity": quantity}).to_string(),
            )
            .await
        }
    };
    let (a, c) = tokio::join!(send(one.addr, "k-1", 2), send(two.addr, "k-1", 2));
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(c.status, StatusCode::ACCEPTED);
    assert_eq!(a.json["purchase_id"], c.json["purchase_id"]);
    assert_eq!(a.json["position"], c.json["position"]);
    // A retry with another quantity still answers (and queues) the first request.
    let again = send(two.addr, "k-1", 3).await;
    assert_eq!(again.json["purchase_id"], a.json["purchase_id"]);
    let other = send(one.addr, "k-2", 1).await;
    assert_ne!(other.json["purchase_id"], a.json["purchase_id"]);
    assert_eq!(b.queue.stats().purchases_lag, 2, "one job per key");
    let id = a.json["purchase_id"].as_str().unwrap();
    let p = get(one.addr, &format!("/purchases/{id}")).await;
    assert_eq!(p.json["quantity"], 2);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_down_queue_gets_503_with_retry_after_and_nothing_queued() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let event = create_event(api.addr, 10, 4).await;
    b.queue.set_available(false);
    let r = post_json_as(
        api.addr,
        &format!("/events/{event}/purchases"),
        &session_of("a"),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    assert_eq!(r.json["error"], "queue_unavailable");
    let h = get(api.addr, "/healthz").await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.json["message"].as_str().unwrap().contains("queue"));
    b.queue.set_available(true);
    assert_eq!(get(api.addr, "/healthz").await.status, StatusCode::OK);
    assert_eq!(b.queue.stats().purchases_lag, 0);
    api.stop().await;
}

#[tokio::test]
async fn a_slow_queue_gets_503_within_the_enqueue_timeout() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(
        &b,
        ApiConfig {
            enqueue_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await;
    let event = create_event(api.addr, 10, 4).await;
    b.queue.set_enqueue_delay(Duration::from_secs(30));
    let started = Instant::now();
    let r = post_json_as(
        api.addr,
        &format!("/events/{event}/purchases"),
        &session_of("a"),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded: {:?}",
        started.elapsed()
    );
    assert!(b.queue.check_ready().await.is_ok());
    api.stop().await;
}

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let h = get(api.addr, "/healthz").await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.json["status"], "ok");
    let event = create_event(api.addr, 10, 4).await;
    post_json_as(
        api.addr,
        &format!("/events/{event}/purchases"),
        &session_of("a"),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(
        get(api.addr, "/no/such/route").await.status,
        StatusCode::NOT_FOUND
    );
    let wrong_method = call(api.addr, Method::DELETE, "/events", &[], Vec::new()).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    // Metrics are for the operators' listener, not the public one.
    let public = get(api.addr, "/metrics").await;
    assert_eq!(public.status, StatusCode::NOT_FOUND);
    let m = get(api.metrics_addr, "/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    for name in [
        "ticket_http_requests_total{route=\"/events/{id}/purchases\",status=\"202\"} 1",
        "ticket_http_requests_total{route=\"/events\",status=\"201\"} 1",
        "ticket_http_requests_total{route=\"/events\",status=\"405\"} 1",
        "ticket_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "ticket_http_requests_total{route=\"unmatched\",status=\"404\"} 2",
        "ticket_http_request_duration_seconds_count{route=\"/events/{id}/purchases\"} 1",
        "ticket_purchases_accepted_total 1",
        "ticket_queue_enqueue_duration_seconds_count 1",
        "ticket_http_request_duration_seconds_bucket",
    ] {
        assert!(
            m.text.contains(name),
            "metrics should contain {name:?}:\n{}",
            m.text
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_purchase_finish() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let event = create_event(api.addr, 10, 4).await;
    b.queue.set_enqueue_delay(Duration::from_millis(300));
    let addr = api.addr;
    let inflight = tokio::spawn(async move {
        post_json_as(
            addr,
            &format!("/events/{event}/purchases"),
            &session_of("a"),
            json!({"quantity": 1}),
        )
        .await
    });
    // Wait until the request is inside the handler, waiting on the queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.queue.stats().enqueue_calls == 0 {
        assert!(
            Instant::now() < deadline,
            "the purchase never reached the queue"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    api.stop().await;
    let r = inflight.await.unwrap();
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(b.queue.stats().purchases_lag, 1);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await; // header deadline 500 ms in tests
    let mut slow = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The server still serves others meanwhile and afterwards.
    assert_eq!(get(api.addr, "/healthz").await.status, StatusCode::OK);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_gets_503_with_retry_after_promptly_and_a_restarted_one_202() {
    use std::sync::Arc;
    use ticket_svc::http::{ApiListeners, ServeConfig, run_api};
    use ticket_svc::queue::{BrokerQueue, BrokerQueueConfig};
    use tokio_util::sync::CancellationToken;

    let broker = broker::testing::TestBroker::start().await;
    let broker_addr = broker.addr;
    let mut config = BrokerQueueConfig::new(broker_addr.to_string());
    config.enqueue_timeout = Duration::from_millis(500);
    let queue = BrokerQueue::connect(config.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ticket_svc::store::SqliteStore::open(dir.path().join("t.db"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run_api(
        ApiListeners {
            public: listener,
            metrics: None,
        },
        Arc::new(store),
        Arc::new(queue),
        ticket_svc::http::FrontDoor {
            access: ticket_svc::testing::test_access(),
            line_log: Arc::new(ticket_svc::line::MemoryLineLog::new()),
        },
        ApiConfig {
            enqueue_timeout: config.enqueue_timeout,
            ..Default::default()
        },
        ServeConfig::default(),
        shutdown.clone(),
    ));
    let event = create_event(addr, 10, 4).await;
    let path = format!("/events/{event}/purchases");
    let ok = post_json_as(addr, &path, &session_of("a"), json!({"quantity": 1})).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);

    let data = broker.stop().await;
    let started = Instant::now();
    let r = post_json_as(addr, &path, &session_of("b"), json!({"quantity": 1})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "prompt: {:?}",
        started.elapsed()
    );
    assert_eq!(
        get(addr, "/healthz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The broker comes back on the same address and data: the API reconnects on its own.
    let _again = broker::testing::TestBroker::start_in(data, |c| c.listen = broker_addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = post_json_as(addr, &path, &session_of("c"), json!({"quantity": 1})).await;
        if r.status == StatusCode::ACCEPTED {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_sale_window_refuses_purchases_before_it_opens_and_after_it_closes() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let create = |window: serde_json::Value| {
        let mut body = json!({"name": "DJ night", "tickets": 10, "max_per_buyer": 4});
        if let (Some(body), Some(window)) = (body.as_object_mut(), window.as_object()) {
            body.extend(window.clone());
        }
        async move { post_json_as(api.addr, "/events", &organizer(), body).await }
    };
    let future = create(json!({"opens_at": "2999-01-01T18:00:00+01:00"})).await;
    assert_eq!(future.status, StatusCode::CREATED, "{}", future.text);
    assert_eq!(future.json["opens_at"], "2999-01-01T17:00:00.000Z");
    assert_eq!(future.json["closes_at"], serde_json::Value::Null);
    let past = create(json!({
        "opens_at": "2001-01-01T00:00:00Z",
        "closes_at": "2002-01-01T00:00:00Z"
    }))
    .await;
    assert_eq!(past.status, StatusCode::CREATED, "{}", past.text);
    let open = create(json!({"opens_at": "2001-01-01T00:00:00Z"})).await;

    let session = session_of("ann");
    let buy_in = |event: &serde_json::Value| {
        let path = format!("/events/{}/purchases", event["id"]);
        let session = session.clone();
        async move { post_json_as(api.addr, &path, &session, json!({"quantity": 1})).await }
    };
    let early = buy_in(&future.json).await;
    assert_eq!(early.status, StatusCode::FORBIDDEN, "{}", early.text);
    assert_eq!(early.json["error"], "sale_not_open");
    assert!(
        early.json["message"]
            .as_str()
            .unwrap()
            .contains("2999-01-01T17:00:00.000Z"),
        "{}",
        early.text
    );
    let late = buy_in(&past.json).await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    assert_eq!(late.json["error"], "sale_closed");
    assert!(
        late.json["message"]
            .as_str()
            .unwrap()
            .contains("2002-01-01")
    );
    assert_eq!(b.queue.stats().purchases_lag, 0, "nothing was queued");
    assert_eq!(buy_in(&open.json).await.status, StatusCode::ACCEPTED);
    // The window reads back with the event.
    let g = get(api.addr, &format!("/events/{}", past.json["id"])).await;
    assert_eq!(g.json["closes_at"], "2002-01-01T00:00:00.000Z");

    for (window, word) in [
        (json!({"opens_at": "tomorrow"}), "RFC 3339"),
        (json!({"opens_at": "2026-12-24T18:00:00"}), "RFC 3339"),
        (
            json!({"opens_at": "1999-12-31T23:00:00Z"}),
            "opens_at must be between",
        ),
        (
            json!({"opens_at": "2030-01-01T00:00:00Z", "closes_at": "2030-01-01T00:00:00Z"}),
            "closes_at must be after opens_at",
        ),
    ] {
        let r = create(window.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{window}: {}", r.text);
        assert!(
            r.json["message"].as_str().unwrap().contains(word),
            "{window}: {}",
            r.text
        );
    }
    api.stop().await;
}
