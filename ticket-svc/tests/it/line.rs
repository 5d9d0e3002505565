//! The waiting room through the API: a pre-queue shuffled at the opening, arrival order after
//! it, one line over two instances and across a restart, admission at the event's pace,
//! permits for admitted visitors only, one purchase per permit, and every forged, foreign or
//! expired paper refused by name. Plus the broker's line log: sequences, dedup, a restart.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use ticket_svc::access::{BuyerId, Email, KeyRing};
use ticket_svc::domain::{EventId, UnixMillis};
use ticket_svc::http::ApiConfig;
use ticket_svc::line::{LineLog, Permit, QueueTicket};
use ticket_svc::queue::MemoryQueueConfig;
use ticket_svc::testing::{
    TEST_SIGNING_KEY, TestApi, buyer_id_of, get, organizer, post_json_as, session_of, start_api,
    test_deps,
};

/// An event of 100 tickets whose sale opens `opens_in` from now, behind a waiting room
/// admitting `per_s` a second; its id and opening time.
async fn event_with_room(api: &TestApi, opens_in: Duration, per_s: u32) -> (i64, UnixMillis) {
    let opens_at = UnixMillis(UnixMillis::now().0 + i64::try_from(opens_in.as_millis()).unwrap());
    let r = post_json_as(
        api.addr,
        "/events",
        &organizer(),
        json!({
            "name": "DJ night", "tickets": 100, "max_per_buyer": 4,
            "opens_at": opens_at.to_string(),
            "waiting_room": {"admit_per_s": per_s}
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json["waiting_room"],
        json!({"admit_per_s": per_s, "proof_of_work_bits": 0, "pace": "fixed"})
    );
    assert!(
        !r.text.contains("seed"),
        "the seed is never shown: {}",
        r.text
    );
    (r.json["id"].as_i64().unwrap(), opens_at)
}

async fn join(api: &TestApi, event: i64, who: &str) -> Value {
    let r = post_json_as(
        api.addr,
        &format!("/events/{event}/line"),
        &session_of(who),
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{who}: {}", r.text);
    r.json
}

async fn status(api: &TestApi, event: i64, token: &str) -> Value {
    let r = get(api.addr, &format!("/events/{event}/line?token={token}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

async fn sleep_until(at: UnixMillis) {
    let left = at.0 - UnixMillis::now().0;
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(left).unwrap() + 20)).await;
    }
}

#[tokio::test]
async fn the_pre_queue_is_shuffled_at_the_opening_and_later_joins_stand_in_arrival_order() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let one = start_api(&b, ApiConfig::default()).await;
    let two = start_api(&b, ApiConfig::default()).await;
    let (event, opens_at) = event_with_room(&one, Duration::from_millis(2500), 5).await;

    // Twenty join before the opening, alternating between two instances: one line.
    let mut early = Vec::new();
    for i in 0..20 {
        let api = if i % 2 == 0 { &one } else { &two };
        let joined = join(api, event, &format!("early{i}")).await;
        assert_eq!(joined["state"], "before_open", "{joined}");
        assert_eq!(joined["opens_at"], opens_at.to_string());
        assert!(joined.get("place").is_none(), "no place before the draw");
        early.push(joined["token"].as_str().unwrap().to_owned());
    }
    // Joining again is the same join (the same place in line).
    let again = join(&two, event, "early0").await;
    let first = QueueTicket::open(&keys(), &early[0], EventId(event), 0).unwrap();
    let second =
        QueueTicket::open(&keys(), again["token"].as_str().unwrap(), EventId(event), 0).unwrap();
    assert_eq!(first.seq, second.seq);

    sleep_until(opens_at).await;
    let mut late = Vec::new();
    for i in 0..5 {
        let api = if i % 2 == 0 { &two } else { &one };
        let joined = join(api, event, &format!("late{i}")).await;
        late.push(joined);
    }
    // After the opening: the pre-queue holds places 0..20 in a shuffled order (the same on
    // either instance), the later ones follow in arrival order.
    let mut places = Vec::new();
    for token in &early {
        let a = status(&one, event, token).await;
        let b = status(&two, event, token).await;
        assert_eq!(a["place"], b["place"], "one line on every instance");
        places.push(a["place"].as_u64().unwrap());
    }
    let mut sorted = places.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    assert_ne!(places, sorted, "shuffled, not in arrival order");
    let late_places: Vec<u64> = late.iter().map(|j| j["place"].as_u64().unwrap()).collect();
    assert_eq!(late_places, vec![20, 21, 22, 23, 24]);
    for j in &late {
        assert_eq!(j["state"], "waiting", "{j}");
        assert!(j["ahead"].as_u64().unwrap() > 0);
        assert!(j["estimated_wait_s"].as_u64().unwrap() > 0);
    }

    // A restarted instance gives everybody the same place.
    one.stop().await;
    let three = start_api(&b, ApiConfig::default()).await;
    for (token, place) in early.iter().zip(&places) {
        assert_eq!(status(&three, event, token).await["place"], *place);
    }
    two.stop().await;
    three.stop().await;
}

fn keys() -> KeyRing {
    KeyRing::parse(&[TEST_SIGNING_KEY]).unwrap()
}

#[tokio::test]
async fn only_admitted_visitors_get_a_permit_and_a_permit_buys_once() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    // Opens in 1.5 s, 10 a second: place 0 is admitted 100 ms after the opening.
    let (event, opens_at) = event_with_room(&api, Duration::from_millis(1500), 10).await;
    let purchases = format!("/events/{event}/purchases");
    let permits = format!("/events/{event}/permits");

    // Before the opening nobody has a permit, and nobody buys without one.
    let ann = join(&api, event, "ann").await;
    let ann_token = ann["token"].as_str().unwrap().to_owned();
    let r = post_json_as(
        api.addr,
        &permits,
        &session_of("ann"),
        json!({"token": ann_token}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.json["error"], "not_open_yet");
    sleep_until(opens_at).await;
    let r = post_json_as(
        api.addr,
        &purchases,
        &session_of("ann"),
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["error"], "permit_required");

    // 60 join after the opening: the last of them is far from admitted.
    let mut last = Value::Null;
    for i in 0..60 {
        last = join(&api, event, &format!("v{i}")).await;
    }
    let last_token = last["token"].as_str().unwrap();
    let r = post_json_as(
        api.addr,
        &permits,
        &session_of("v59"),
        json!({"token": last_token}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.json["error"], "not_admitted");
    assert!(r.json["message"].as_str().unwrap().contains("ahead"));

    // Ann (place 0) is admitted within 100 ms of the opening.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(status(&api, event, &ann_token).await["state"], "admitted");
    // Another buyer cannot use Ann's ticket.
    let r = post_json_as(
        api.addr,
        &permits,
        &session_of("bob"),
        json!({"token": ann_token}),
    )
    .await;
    assert_eq!(r.json["error"], "not_yours");
    let r = post_json_as(
        api.addr,
        &permits,
        &session_of("ann"),
        json!({"token": ann_token}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let permit = r.json["permit"].as_str().unwrap().to_owned();

    // One purchase per permit: sent twice, the same purchase.
    let buy = |body: Value, who: &'static str| {
        let path = purchases.clone();
        async move { post_json_as(api.addr, &path, &session_of(who), body).await }
    };
    let first = buy(json!({"quantity": 2, "permit": permit}), "ann").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let second = buy(json!({"quantity": 1, "permit": permit}), "ann").await;
    assert_eq!(second.json["purchase_id"], first.json["purchase_id"]);
    assert_eq!(second.json["position"], first.json["position"]);
    assert_eq!(b.queue.stats().purchases_lag, 1, "one job for the permit");
    let p = get(
        api.addr,
        &format!("/purchases/{}", first.json["purchase_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(p.json["buyer"], buyer_id_of("ann"));

    // Someone else's permit, a permit of another event, an altered or expired one: refused.
    let r = buy(json!({"quantity": 1, "permit": permit}), "bob").await;
    assert_eq!(r.json["error"], "not_yours");
    let ann_id = BuyerId::of(&Email::parse("ann@test.example").unwrap());
    let other_event = Permit {
        event: EventId(event + 1000),
        visitor: ann_id.clone(),
        seq: 0,
    }
    .seal(&keys(), i64::MAX);
    let r = buy(json!({"quantity": 1, "permit": other_event}), "ann").await;
    assert_eq!(r.json["error"], "other_event");
    let expired = Permit {
        event: EventId(event),
        visitor: ann_id.clone(),
        seq: 0,
    }
    .seal(&keys(), 1);
    let r = buy(json!({"quantity": 1, "permit": expired}), "ann").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["error"], "permit_expired");
    let mut altered = permit.clone().into_bytes();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let r = buy(json!({"quantity": 1, "permit": altered}), "ann").await;
    assert_eq!(r.json["error"], "bad_permit");
    let foreign = Permit {
        event: EventId(event),
        visitor: ann_id,
        seq: 0,
    }
    .seal(
        &KeyRing::parse(&["other:ffffffffffffffffffffffffffffffff"]).unwrap(),
        i64::MAX,
    );
    let r = buy(json!({"quantity": 1, "permit": foreign}), "ann").await;
    assert_eq!(r.json["error"], "bad_permit");
    assert!(
        r.json["message"].as_str().unwrap().contains("key"),
        "{}",
        r.text
    );
    // A queue token is not a permit.
    let r = buy(json!({"quantity": 1, "permit": ann_token}), "ann").await;
    assert_eq!(r.json["error"], "bad_permit");
    assert_eq!(b.queue.stats().purchases_lag, 1, "nothing more was queued");

    let m = get(api.metrics_addr, "/metrics").await.text;
    for series in [
        "ticket_line_joins_total 61",
        r#"ticket_line_permits_total{result="issued"} 1"#,
        r#"ticket_line_permits_total{result="used"} 1"#,
        r#"ticket_line_refused_total{reason="permit_required"} 1"#,
        r#"ticket_line_refused_total{reason="not_admitted"} 1"#,
        r#"ticket_line_refused_total{reason="not_open_yet"} 1"#,
        r#"ticket_line_refused_total{reason="not_yours"} 2"#,
        r#"ticket_line_refused_total{reason="permit_expired"} 1"#,
        r#"ticket_line_refused_total{reason="bad_permit"} 3"#,
        "ticket_line_wait_seconds_count 1",
    ] {
        assert!(m.contains(series), "{series} in\n{m}");
    }
    assert!(
        !m.contains("ticket_line_waiting 0\n"),
        "visitors wait:\n{m}"
    );
    api.stop().await;
}

#[tokio::test]
async fn queue_tokens_are_refused_by_name_and_events_without_a_room_have_no_line() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let (event, _) = event_with_room(&api, Duration::from_secs(3600), 10).await;
    let token = join(&api, event, "ann").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (other, _) = event_with_room(&api, Duration::from_secs(3600), 10).await;
    let foreign = QueueTicket {
        event: EventId(event),
        visitor: BuyerId::of(&Email::parse("ann@test.example").unwrap()),
        seq: 0,
        joined_at_ms: 0,
    }
    .seal(
        &KeyRing::parse(&["other:ffffffffffffffffffffffffffffffff"]).unwrap(),
        i64::MAX,
    );
    for (path, error) in [
        (format!("/events/{other}/line?token={token}"), "other_event"),
        (
            format!("/events/{event}/line?token={foreign}"),
            "bad_queue_token",
        ),
        (
            format!("/events/{event}/line?token=v1.x.y.z"),
            "bad_queue_token",
        ),
    ] {
        let r = get(api.addr, &path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text);
        assert_eq!(r.json["error"], error, "{path}");
    }
    // Joining needs a session.
    let r =
        ticket_svc::testing::post_json(api.addr, &format!("/events/{event}/line"), json!({})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // No waiting room: no line, and purchases need no permit.
    let plain = ticket_svc::testing::create_event(api.addr, 10, 4).await;
    let r = post_json_as(
        api.addr,
        &format!("/events/{plain}/line"),
        &session_of("ann"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["error"], "no_waiting_room");
    // A waiting room needs an opening time, and a sane pace.
    for (room, word) in [
        (
            json!({"waiting_room": {"admit_per_s": 10}}),
            "needs opens_at",
        ),
        (
            json!({"opens_at": "2999-01-01T00:00:00Z", "waiting_room": {"admit_per_s": 0}}),
            "admit_per_s",
        ),
        (
            json!({"opens_at": "2999-01-01T00:00:00Z", "waiting_room": {"rate": 5}}),
            "unknown field",
        ),
    ] {
        let mut body = json!({"name": "x", "tickets": 1, "max_per_buyer": 1});
        body.as_object_mut()
            .unwrap()
            .extend(room.as_object().unwrap().clone());
        let r = post_json_as(api.addr, "/events", &organizer(), body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{room}: {}", r.text);
        assert!(
            r.json["message"].as_str().unwrap().contains(word),
            "{}",
            r.text
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn a_room_that_asks_a_proof_of_work_joins_only_those_who_did_it() {
    use ticket_svc::line::proof::{solve, zero_bits};
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let r = post_json_as(
        api.addr,
        "/events",
        &organizer(),
        json!({
            "name": "DJ night", "tickets": 10, "max_per_buyer": 2,
            "opens_at": "2999-01-01T00:00:00Z",
            "waiting_room": {"admit_per_s": 10, "proof_of_work_bits": 8}
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["waiting_room"]["proof_of_work_bits"], 8);
    let event = r.json["id"].as_i64().unwrap();
    let line = format!("/events/{event}/line");

    let r = post_json_as(api.addr, &line, &session_of("ann"), json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["error"], "proof_required");
    assert!(r.json["message"].as_str().unwrap().contains("8 bits"));

    let c = ticket_svc::testing::call(
        api.addr,
        http::Method::GET,
        &format!("{line}/challenge"),
        &[("authorization", &session_of("ann"))],
        "",
    )
    .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    assert_eq!(c.json["bits"], 8);
    let challenge = c.json["challenge"].as_str().unwrap().to_owned();
    let short = (0..).find(|s| zero_bits(&challenge, *s) < 8).unwrap();
    let solution = solve(&challenge, 8);
    for (who, solution, error) in [
        ("ann", short, "bad_proof"),
        // Solved for Ann: no line for Bob.
        ("bob", solution, "bad_proof"),
    ] {
        let r = post_json_as(
            api.addr,
            &line,
            &session_of(who),
            json!({"challenge": challenge, "solution": solution}),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.text);
        assert_eq!(r.json["error"], error);
    }
    let r = post_json_as(
        api.addr,
        &line,
        &session_of("ann"),
        json!({"challenge": challenge, "solution": solution}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // A difficulty beyond 28 bits is refused when the event is made.
    let r = post_json_as(
        api.addr,
        "/events",
        &organizer(),
        json!({
            "name": "x", "tickets": 1, "max_per_buyer": 1, "opens_at": "2999-01-01T00:00:00Z",
            "waiting_room": {"admit_per_s": 10, "proof_of_work_bits": 29}
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("proof_of_work_bits")
    );
    let m = get(api.metrics_addr, "/metrics").await.text;
    assert!(
        m.contains(r#"ticket_line_refused_total{reason="bad_proof"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ticket_line_refused_total{reason="proof_required"} 1"#),
        "{m}"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_keeps_each_line_in_order_across_a_restart() {
    use ticket_svc::line::BrokerLineLog;
    use ticket_svc::queue::BrokerQueueConfig;
    let broker = broker::testing::TestBroker::start().await;
    let addr = broker.addr;
    let log = BrokerLineLog::new(&BrokerQueueConfig::new(addr.to_string()));
    let visitor = |n: &str| BuyerId::of(&Email::parse(&format!("{n}@example.org")).unwrap());
    let e = EventId(42);
    assert_eq!(log.join(e, &visitor("a"), 1).await.unwrap(), 0);
    assert_eq!(log.join(e, &visitor("b"), 2).await.unwrap(), 1);
    assert_eq!(
        log.join(e, &visitor("a"), 3).await.unwrap(),
        0,
        "a repeat keeps its place"
    );
    assert_eq!(
        log.join(EventId(43), &visitor("a"), 3).await.unwrap(),
        0,
        "a line per event"
    );
    let data = broker.stop().await;
    let _again = broker::testing::TestBroker::start_in(data, |c| c.listen = addr).await;
    // The line goes on where it was; two instances sealing get one seal.
    let other = BrokerLineLog::new(&BrokerQueueConfig::new(addr.to_string()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let sealed = loop {
        match log.seal(e).await {
            Ok(s) => break s,
            Err(err) => {
                assert!(tokio::time::Instant::now() < deadline, "{err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(sealed, 2);
    assert_eq!(other.seal(e).await.unwrap(), 2);
    assert_eq!(other.join(e, &visitor("c"), 4).await.unwrap(), 3);
}
