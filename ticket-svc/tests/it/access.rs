//! Who may do what, through the API: a buyer logs in with a code sent to their address and buys
//! as that identity only; organizer routes take the organizer's token and nothing else; refusals
//! are counted.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use ticket_svc::access::{Access, AccessConfig, KeyRing, MAX_WRONG_CODES, OrganizerTokens};
use ticket_svc::http::ApiConfig;
use ticket_svc::queue::MemoryQueueConfig;
use ticket_svc::testing::{
    Outbox, TEST_ORGANIZER_TOKEN, access_with, buyer_id_of, call, create_event, get, organizer,
    post_json, post_json_as, session_of, start_api, start_api_with, test_deps,
};

/// Logs `email` in through the API: the session's `Authorization` value and buyer id.
async fn log_in(addr: std::net::SocketAddr, outbox: &Outbox, email: &str) -> (String, String) {
    let started = post_json(addr, "/login", json!({ "email": email })).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.text);
    assert!(started.json["expires_at"].as_str().unwrap().ends_with('Z'));
    let code = outbox
        .last_code_for(&email.trim().to_lowercase())
        .expect("the login sent a code");
    let session = post_json(
        addr,
        "/sessions",
        json!({ "login": started.json["login"], "code": code }),
    )
    .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.text);
    (
        format!("Bearer {}", session.json["session"].as_str().unwrap()),
        session.json["buyer"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_logs_in_with_a_code_and_the_limit_binds_to_the_identity() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let outbox = Outbox::default();
    let api = start_api_with(
        &b,
        ApiConfig::default(),
        access_with(&outbox, &[TEST_ORGANIZER_TOKEN]),
    )
    .await;
    let event = create_event(api.addr, 100, 4).await;
    let path = format!("/events/{event}/purchases");

    // The same address, however written, is one buyer with one limit.
    let (ann, ann_id) = log_in(api.addr, &outbox, "Ann@Example.org").await;
    let (ann_again, ann_again_id) = log_in(api.addr, &outbox, " ann@example.ORG").await;
    assert_eq!(ann_id, ann_again_id);
    assert_ne!(ann, ann_again, "each login is a session of its own");
    let (bob, bob_id) = log_in(api.addr, &outbox, "bob@example.org").await;
    assert_ne!(ann_id, bob_id);

    let mut ids = Vec::new();
    for (session, quantity) in [(&ann, 3), (&ann_again, 3), (&bob, 4)] {
        let r = post_json_as(api.addr, &path, session, json!({ "quantity": quantity })).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        ids.push(r.json["purchase_id"].as_str().unwrap().to_owned());
    }
    let worker = b.start_worker();
    let mut seen = Vec::new();
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let p = get(api.addr, &format!("/purchases/{id}")).await;
            if p.json["status"] != "pending" {
                seen.push((
                    p.json["buyer"].as_str().unwrap().to_owned(),
                    p.json["status"].as_str().unwrap().to_owned(),
                    p.json["reason"].as_str().map(str::to_owned),
                ));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}", p.text);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    worker.stop().await;
    assert_eq!(
        seen,
        [
            (ann_id.clone(), "confirmed".into(), None),
            // 3 + 3 is over Ann's 4, whichever session she used.
            (ann_id, "rejected".into(), Some("limit_exceeded".into())),
            (bob_id, "confirmed".into(), None),
        ]
    );
    api.stop().await;
}

#[tokio::test]
async fn purchases_without_a_valid_session_are_401_and_nothing_is_queued() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let event = create_event(api.addr, 10, 4).await;
    let path = format!("/events/{event}/purchases");
    let body = json!({ "quantity": 1 });
    let real = session_of("ann");
    let altered = {
        // One character of the payload changed: Ann's token, claiming to be someone else.
        let mut t = real.clone().into_bytes();
        let i = t.len() / 2;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(t).unwrap()
    };
    let foreign = {
        let other = Access::new(AccessConfig::new(
            KeyRing::parse(&["other:ffffffffffffffffffffffffffffffff"]).unwrap(),
            OrganizerTokens::parse::<&str>(&[]).unwrap(),
        ));
        let email = ticket_svc::access::Email::parse("ann@test.example").unwrap();
        format!("Bearer {}", other.session_for(&email, 0).token)
    };
    let expired = {
        let email = ticket_svc::access::Email::parse("ann@test.example").unwrap();
        let old = ticket_svc::testing::test_access().session_for(&email, 1_000);
        format!("Bearer {}", old.token)
    };
    for (authorization, error, word) in [
        (None, "unauthenticated", "buyer session"),
        (Some("Basic YW5uOmFubg=="), "unauthenticated", "Bearer"),
        (Some(altered.as_str()), "bad_session", "signature"),
        (Some(foreign.as_str()), "bad_session", "key"),
        (Some(expired.as_str()), "bad_session", "expired"),
        (
            Some(&format!("Bearer {TEST_ORGANIZER_TOKEN}")),
            "bad_session",
            "not a ticketrush token",
        ),
    ] {
        let r = match authorization {
            Some(a) => post_json_as(api.addr, &path, a, body.clone()).await,
            None => post_json(api.addr, &path, body.clone()).await,
        };
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{error}: {}", r.text);
        assert_eq!(r.json["error"], error, "{}", r.text);
        assert!(
            r.json["message"].as_str().unwrap().contains(word),
            "{word}: {}",
            r.text
        );
        assert_eq!(
            r.headers.get("www-authenticate").unwrap(),
            "Bearer realm=\"ticketrush\""
        );
    }
    assert_eq!(b.queue.stats().purchases_lag, 0, "nothing was queued");
    // The real session still buys.
    let ok = post_json_as(api.addr, &path, &real, body).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    let p = get(
        api.addr,
        &format!("/purchases/{}", ok.json["purchase_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(p.json["buyer"], buyer_id_of("ann"));

    let m = get(api.metrics_addr, "/metrics").await.text;
    for series in [
        r#"ticket_access_refused_total{credential="session",reason="missing"} 2"#,
        r#"ticket_access_refused_total{credential="session",reason="bad_signature"} 1"#,
        r#"ticket_access_refused_total{credential="session",reason="unknown_key"} 1"#,
        r#"ticket_access_refused_total{credential="session",reason="expired"} 1"#,
        r#"ticket_access_refused_total{credential="session",reason="malformed"} 1"#,
    ] {
        assert!(m.contains(series), "{series} in\n{m}");
    }
    api.stop().await;
}

#[tokio::test]
async fn organizer_routes_take_the_organizer_token_only() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let event = json!({"name": "DJ night", "tickets": 5, "max_per_buyer": 1});
    let buyer = session_of("ann");
    for (authorization, status, error) in [
        (None, StatusCode::UNAUTHORIZED, "unauthenticated"),
        (Some(buyer.as_str()), StatusCode::FORBIDDEN, "not_organizer"),
        (
            Some("Bearer test-organizer-token-012345678"),
            StatusCode::FORBIDDEN,
            "not_organizer",
        ),
    ] {
        let r = match authorization {
            Some(a) => post_json_as(api.addr, "/events", a, event.clone()).await,
            None => post_json(api.addr, "/events", event.clone()).await,
        };
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(r.json["error"], error);
    }
    let r = post_json_as(api.addr, "/events", &organizer(), event.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    api.stop().await;

    // An API without organizer tokens has organizer routes off, and says why.
    let outbox = Outbox::default();
    let api = start_api_with(&b, ApiConfig::default(), access_with(&outbox, &[])).await;
    let r = post_json_as(api.addr, "/events", &organizer(), event).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["error"], "organizer_disabled");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("--organizer-token")
    );
    api.stop().await;
}

#[tokio::test]
async fn logins_refuse_bad_addresses_wrong_codes_and_forged_challenges() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let outbox = Outbox::default();
    let api = start_api_with(
        &b,
        ApiConfig::default(),
        access_with(&outbox, &[TEST_ORGANIZER_TOKEN]),
    )
    .await;
    for bad in ["", "ann", "ann@example", "a b@example.org"] {
        let r = post_json(api.addr, "/login", json!({ "email": bad })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.text);
        assert!(r.json["message"].as_str().unwrap().starts_with("email"));
    }
    let r = post_json(api.addr, "/login", json!({ "mail": "x@y.org" })).await;
    assert_eq!(r.json["error"], "bad_json");
    assert_eq!(outbox.sent(), 0, "no code was sent");

    let started = post_json(api.addr, "/login", json!({ "email": "ann@example.org" })).await;
    let login = started.json["login"].as_str().unwrap().to_owned();
    let code = outbox.last_code_for("ann@example.org").unwrap();
    let wrong = if code.starts_with('0') {
        "11111111"
    } else {
        "00000000"
    };
    for _ in 0..MAX_WRONG_CODES {
        let r = post_json(
            api.addr,
            "/sessions",
            json!({ "login": login, "code": wrong }),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["error"], "wrong_code");
    }
    let r = post_json(
        api.addr,
        "/sessions",
        json!({ "login": login, "code": code }),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.json["error"], "too_many_attempts");

    // A challenge with its payload altered (another address) does not open.
    let mut forged = login.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let r = post_json(
        api.addr,
        "/sessions",
        json!({ "login": forged, "code": code }),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"], "bad_login");

    // A sender that fails is a 503 the buyer may retry.
    outbox.set_down(true);
    let r = post_json(api.addr, "/login", json!({ "email": "bob@example.org" })).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json["error"], "code_not_sent");
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");

    let m = get(api.metrics_addr, "/metrics").await.text;
    for series in [
        r#"ticket_logins_total{result="code_sent"} 1"#,
        r#"ticket_logins_total{result="send_failed"} 1"#,
        r#"ticket_access_refused_total{credential="login",reason="wrong_code"} 5"#,
        r#"ticket_access_refused_total{credential="login",reason="too_many_attempts"} 1"#,
        r#"ticket_access_refused_total{credential="login",reason="bad_signature"} 1"#,
    ] {
        assert!(m.contains(series), "{series} in\n{m}");
    }
    // Unrelated methods on the login routes.
    let r = call(api.addr, Method::GET, "/login", &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    api.stop().await;
}
