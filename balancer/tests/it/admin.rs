//! The admin listener: status page and JSON, metrics text, adding and draining backends,
//! the bearer token.

use std::time::Duration;

use balancer::config::AdminAuth;
use balancer::testing::{Client, FakeBackend, get};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{TestBalancer, config, row, wait_until};

#[tokio::test]
async fn status_page_and_json_list_the_backends() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let lb = TestBalancer::start(config(&[&a, &b]));
    get(lb.addr, "/").await.unwrap();
    let page = get(lb.admin, "/status").await.unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("http-equiv=\"refresh\""));
    assert!(html.contains(&a.addr().to_string()) && html.contains(&b.addr().to_string()));
    assert_eq!(
        html.matches("<tr>").count(),
        3,
        "header row + one row per backend"
    );
    assert!(html.trim_end().ends_with("</html>"));
    let json = get(lb.admin, "/status.json").await.unwrap().json();
    assert_eq!(json["backends"].as_array().unwrap().len(), 2);
    assert_eq!(json["strategy"], "round-robin");
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let a = FakeBackend::start("a").await.unwrap();
    let lb = TestBalancer::start(config(&[&a]));
    for _ in 0..3 {
        get(lb.addr, "/").await.unwrap();
    }
    let text = get(lb.admin, "/metrics").await.unwrap().text();
    let mut samples = 0;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty()
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("# UNIT ")
                    || line == "# EOF",
                "bad comment line {line:?}"
            );
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap();
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = name_labels.split('{').next().unwrap();
        assert!(name.starts_with("balancer_"), "{line}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = name_labels.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples += 1;
    }
    assert!(samples > 10);
    assert!(
        text.contains("balancer_requests_total{class=\"2xx\"} 3"),
        "{text}"
    );
    let backend = a.addr().to_string();
    assert!(text.contains(&format!(
        "balancer_upstream_requests_total{{backend=\"{backend}\",class=\"2xx\"}} 3"
    )));
    assert!(text.contains(&format!("balancer_backend_up{{backend=\"{backend}\"}} 1")));
    assert!(text.contains("balancer_upstream_duration_seconds_bucket"));
    lb.stop().await.unwrap();
}

async fn admin_send(
    admin: std::net::SocketAddr,
    req: Request<Full<Bytes>>,
) -> balancer::testing::Reply {
    Client::connect(admin)
        .await
        .unwrap()
        .send(req)
        .await
        .unwrap()
}

#[tokio::test]
async fn backends_are_added_and_drained_at_run_time() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.admin_token = Some("s3cret".to_owned());
    let lb = TestBalancer::start(cfg);

    b.set_healthy(false);
    let body = format!(r#"{{"addr":"{}","weight":1}}"#, b.addr());
    let unauth = Request::post("/backends")
        .header("host", "admin")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    assert_eq!(admin_send(lb.admin, unauth).await.status, 401);

    let add = Request::post("/backends")
        .header("host", "admin")
        .header("authorization", "Bearer s3cret")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    assert_eq!(admin_send(lb.admin, add).await.status, 201);
    let bad = Request::post("/backends")
        .header("host", "admin")
        .header("authorization", "Bearer s3cret")
        .body(Full::new(Bytes::from_static(b"{\"addr\":\"nope\"}")))
        .unwrap();
    let bad = admin_send(lb.admin, bad).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].is_string());
    let again = Request::post("/backends")
        .header("host", "admin")
        .header("authorization", "Bearer s3cret")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    assert_eq!(admin_send(lb.admin, again).await.status, 409);

    // A backend added at run time serves only after its first passing health check: while
    // b's check fails, everything goes to a.
    let h = lb.handle.clone();
    let mut client = Client::connect(lb.addr).await.unwrap();
    for _ in 0..6 {
        assert_eq!(
            client.get("/").await.unwrap().header("x-backend").unwrap(),
            "a"
        );
    }
    assert_eq!(b.hits(), 0);
    b.set_healthy(true);
    wait_until("b checked and up", Duration::from_secs(10), async || {
        row(&h, b.addr()).is_some_and(|r| r.available)
    })
    .await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await.unwrap().status, 200);
    }
    assert_eq!(b.hits(), 5);

    // Drain b while a request is running on it: the request completes, then b goes away.
    let addr = lb.addr;
    let slow = tokio::spawn(async move {
        let mut c = Client::connect(addr).await.unwrap();
        // Round-robin is at a (even count so far), so the second request lands on b.
        c.get("/").await.unwrap();
        c.get("/?delay_ms=1500").await.unwrap()
    });
    wait_until("slow request on b", Duration::from_secs(10), async || {
        row(&h, b.addr()).is_some_and(|r| r.in_flight == 1)
    })
    .await;
    let del = Request::delete(format!("/backends/{}", b.addr()))
        .header("host", "admin")
        .header("authorization", "Bearer s3cret")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(admin_send(lb.admin, del).await.status, 202);
    assert!(row(&h, b.addr()).unwrap().draining);
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend").unwrap(), "b");
    wait_until("b removed", Duration::from_secs(10), async || {
        row(&h, b.addr()).is_none()
    })
    .await;
    let before = b.hits();
    for _ in 0..6 {
        assert_eq!(
            client.get("/").await.unwrap().header("x-backend").unwrap(),
            "a"
        );
    }
    assert_eq!(b.hits(), before);
    let missing = Request::delete(format!("/backends/{}", b.addr()))
        .header("host", "admin")
        .header("authorization", "Bearer s3cret")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(admin_send(lb.admin, missing).await.status, 404);
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn reload_keeps_live_keep_alive_connections() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let cfg = config(&[&a]);
    let lb = TestBalancer::start(cfg.clone());
    let mut client = Client::connect(lb.addr).await.unwrap();
    assert_eq!(
        client.get("/").await.unwrap().header("x-backend").unwrap(),
        "a"
    );
    let mut new = cfg;
    new.backends = vec![balancer::BackendSpec::new(b.addr())];
    lb.handle.reload(new).unwrap();
    let h = lb.handle.clone();
    wait_until("a removed and b up", Duration::from_secs(10), async || {
        row(&h, a.addr()).is_none() && row(&h, b.addr()).is_some_and(|r| r.available)
    })
    .await;
    // Same connection, new backend set.
    assert!(!client.is_closed());
    assert_eq!(
        client.get("/").await.unwrap().header("x-backend").unwrap(),
        "b"
    );
    lb.stop().await.unwrap();
}

#[tokio::test]
async fn admin_auth_all_puts_metrics_and_status_behind_the_token() {
    let a = FakeBackend::start("a").await.unwrap();
    let mut cfg = config(&[&a]);
    cfg.admin_token = Some("s3cret".to_owned());
    let lb = TestBalancer::start(cfg);
    let get = |path: &str, token: Option<&str>| {
        let mut req = Request::get(path).header("host", "admin");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Full::new(Bytes::new())).unwrap()
    };
    // By default the reads stay open (Prometheus scrapes without a token).
    for path in ["/metrics", "/status", "/status.json"] {
        assert_eq!(admin_send(lb.admin, get(path, None)).await.status, 200);
    }
    lb.stop().await.unwrap();
    // Under `all` every route wants it.
    let mut cfg = config(&[&a]);
    cfg.admin_token = Some("s3cret".to_owned());
    cfg.admin_auth = AdminAuth::All;
    let lb = TestBalancer::start(cfg);
    for path in ["/metrics", "/status", "/status.json"] {
        assert_eq!(
            admin_send(lb.admin, get(path, None)).await.status,
            401,
            "{path}"
        );
        assert_eq!(
            admin_send(lb.admin, get(path, Some("wrong"))).await.status,
            401,
            "{path}"
        );
        assert_eq!(
            admin_send(lb.admin, get(path, Some("s3cret"))).await.status,
            200,
            "{path}"
        );
    }
    lb.stop().await.unwrap();
}
