//! An auto-paced waiting room through two API instances: the admission rate rises while the
//! workers keep up, falls when they stop, is the same on both instances (one point recorded
//! in the store), and never takes back a place it admitted.

use std::time::Duration;

use http::StatusCode;
use plumbing::testing::wait_until;
use serde_json::{Value, json};
use ticket_svc::domain::{EventId, UnixMillis};
use ticket_svc::http::ApiConfig;
use ticket_svc::queue::MemoryQueueConfig;
use ticket_svc::store::Store;
use ticket_svc::testing::{
    TestApi, buy, create_event, get, organizer, post_json_as, session_of, start_api, test_deps,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

async fn view(api: &TestApi, event: i64, token: &str) -> Value {
    let r = get(api.addr, &format!("/events/{event}/line?token={token}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

/// Buys on `event`, one ticket per buyer, about `per_s` a second, until cancelled.
fn start_buying(api: &TestApi, event: i64, per_s: u64) -> (CancellationToken, JoinSet<()>) {
    let stop = CancellationToken::new();
    let mut set = JoinSet::new();
    let (addr, token) = (api.addr, stop.clone());
    set.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_s));
        for n in 0.. {
            tokio::select! {
                _ = tick.tick() => {}
                () = token.cancelled() => return,
            }
            let r = buy(addr, event, &format!("other{n}"), 1, None).await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        }
    });
    (stop, set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_paced_line_speeds_up_while_the_workers_keep_up_and_slows_when_they_stop() {
    let deps = test_deps(MemoryQueueConfig::default()).await;
    let (a, b) = (
        start_api(&deps, ApiConfig::default()).await,
        start_api(&deps, ApiConfig::default()).await,
    );
    let opens_at = UnixMillis(UnixMillis::now().0 + 1_000);
    let r = post_json_as(
        a.addr,
        "/events",
        &organizer(),
        json!({
            "name": "DJ night", "tickets": 100, "max_per_buyer": 4,
            "opens_at": opens_at.to_string(),
            "waiting_room": {"admit_per_s": 10, "pace": "auto"}
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json["waiting_room"],
        json!({"admit_per_s": 10, "proof_of_work_bits": 0, "pace": "auto"})
    );
    let event = r.json["id"].as_i64().unwrap();
    // A fixed room says so.
    let fixed = post_json_as(
        a.addr,
        "/events",
        &organizer(),
        json!({
            "name": "Fixed", "tickets": 1, "max_per_buyer": 1,
            "opens_at": opens_at.to_string(), "waiting_room": {"admit_per_s": 5}
        }),
    )
    .await;
    assert_eq!(fixed.json["waiting_room"]["pace"], "fixed");

    // A long pre-queue: nobody here buys, so admission follows the workers of another sale.
    let mut tokens = Vec::new();
    for i in 0..400 {
        let r = post_json_as(
            if i % 2 == 0 { a.addr } else { b.addr },
            &format!("/events/{event}/line"),
            &session_of(&format!("fan{i}")),
            json!({}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        tokens.push(r.json["token"].as_str().unwrap().to_owned());
    }
    let other = create_event(a.addr, 100_000, 1).await;
    let worker = deps.start_worker();
    let (buying_stop, mut buying) = start_buying(&a, other, 50);

    // The workers decide ~50/s and keep up: the rate rises from 10/s, on both instances alike.
    let probe = &tokens[399];
    let mut peak = 0;
    wait_until("the line speeds up", Duration::from_secs(20), async || {
        let (va, vb) = (view(&a, event, probe).await, view(&b, event, probe).await);
        peak = va["admit_per_s"].as_u64().unwrap();
        peak >= 20 && va["admit_per_s"] == vb["admit_per_s"]
    })
    .await;
    let on_record = deps.store.line_pace(EventId(event)).await.unwrap().unwrap();
    assert!(on_record.per_s >= 20, "{on_record:?}");
    let ups = |api: &TestApi| {
        let addr = api.metrics_addr;
        async move {
            let m = plumbing::testing::http_get(addr, "/metrics")
                .await
                .unwrap()
                .body;
            m.lines()
                .find(|l| l.starts_with("ticket_line_pace_changes_total{direction=\"up\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .map_or(0.0, |v| v.parse::<f64>().unwrap())
        }
    };
    assert!(
        ups(&a).await + ups(&b).await >= 1.0,
        "the rises are counted"
    );

    // A place admitted now stays admitted through what follows.
    let mut admitted_tokens = Vec::new();
    for t in &tokens {
        if view(&a, event, t).await["state"] == "admitted" {
            admitted_tokens.push(t.clone());
        }
    }
    assert!(!admitted_tokens.is_empty());

    // The workers stop while purchases keep coming: the queue grows and the rate is cut.
    worker.stop().await;
    wait_until("the line slows down", Duration::from_secs(20), async || {
        view(&b, event, probe).await["admit_per_s"]
            .as_u64()
            .unwrap()
            < peak / 2
    })
    .await;
    for t in &admitted_tokens {
        assert_eq!(view(&b, event, t).await["state"], "admitted", "taken back");
    }
    buying_stop.cancel();
    while buying.join_next().await.is_some() {}
    a.stop().await;
    b.stop().await;
}
