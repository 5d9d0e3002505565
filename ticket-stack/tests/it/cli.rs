//! The binary: `api` and `worker` as real processes against a test broker (serve, decide, drain on
//! SIGTERM); one clear line and a non-zero exit for every startup failure; `demo` runs the whole
//! stack end to end; `up` killed with SIGKILL right after a burst of 202s loses none of them on
//! restart; bad flags exit 2.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use broker::testing::TestBroker;
use http::StatusCode;
use serde_json::json;

use ticket_svc::access::{Access, AccessConfig, Email, KeyRing, OrganizerTokens, unix_now};
use ticket_svc::testing::{TEST_ORGANIZER_TOKEN, TEST_SIGNING_KEY, buy, create_event, get};

fn ticket_svc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ticket-svc"))
        .args(args)
        .output()
        .unwrap()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ticket-svc"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM, then the exit status within 10 s.
fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {pid} did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Distinct ports free right now (all held at once while picking, so they differ).
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// Kills a child that misbehaved and returns what it printed, for the failure message.
fn stderr_of(mut child: Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_processes_sell_through_a_broker_and_drain_on_sigterm() {
    let broker = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("data/tickets.db").display());
    let broker_addr = broker.addr.to_string();
    let [port, metrics_port] = free_ports::<2>();
    let listen = format!("127.0.0.1:{port}");
    let api = spawn(&[
        "api",
        "--listen",
        &listen,
        "--broker",
        &broker_addr,
        "--db",
        &db,
        "--signing-key",
        TEST_SIGNING_KEY,
        "--organizer-token",
        TEST_ORGANIZER_TOKEN,
    ]);
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let worker = spawn(&[
        "worker",
        "--broker",
        &broker_addr,
        "--db",
        &db,
        "--workers",
        "2",
        "--metrics-listen",
        &metrics_listen,
    ]);
    let addr = listen.parse().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && get(addr, "/healthz").await.status == StatusCode::OK
        {
            break;
        }
        if Instant::now() > deadline {
            let worker_err = stderr_of(worker);
            panic!(
                "the api never became ready:\napi: {}\nworker: {worker_err}",
                stderr_of(api)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = create_event(addr, 3, 2).await;
    let mut purchases = Vec::new();
    for buyer in ["ann", "bob", "cat"] {
        let r = buy(addr, id, buyer, 2, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        purchases.push(r.json["purchase_id"].as_str().unwrap().to_owned());
    }
    let mut statuses = Vec::new();
    // Its own deadline: on a loaded machine start-up may have used most of the first one.
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in &purchases {
        loop {
            let r = get(addr, &format!("/purchases/{p}")).await;
            let status = r.json["status"].as_str().unwrap_or("").to_owned();
            if status == "confirmed" || status == "rejected" {
                statuses.push((status, r.json["reason"].as_str().map(str::to_owned)));
                break;
            }
            if Instant::now() > deadline {
                let worker_err = stderr_of(worker);
                panic!(
                    "purchase {p} never decided:\napi: {}\nworker: {worker_err}",
                    stderr_of(api)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // 3 tickets, 2 each: the first sells, the second does not fit, the third does not fit.
    assert_eq!(statuses[0].0, "confirmed");
    assert_eq!(statuses[1], ("rejected".into(), Some("sold_out".into())));
    assert_eq!(statuses[2], ("rejected".into(), Some("sold_out".into())));
    let ev = get(addr, &format!("/events/{id}")).await;
    assert_eq!(ev.json["sold"], 2);
    let m = get(metrics_listen.parse().unwrap(), "/metrics").await;
    assert!(
        m.text
            .contains("ticket_worker_decisions_total{outcome=\"confirmed\"} 1"),
        "{}",
        m.text
    );

    assert!(terminate(api).success(), "the api drains and exits 0");
    assert!(terminate(worker).success(), "the worker drains and exits 0");
}

/// Waits until `addr` answers `/healthz` with 200, or fails with `child`'s stderr.
async fn wait_healthy(addr: std::net::SocketAddr, child: Child, what: &str) -> Child {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && get(addr, "/healthz").await.status == StatusCode::OK
        {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never became ready: {}",
            stderr_of(child)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The organizer's `Authorization` value and a session maker, from the credentials `up` keeps
/// under its data dir.
fn up_credentials(data_dir: &str) -> (String, Access) {
    let read = |name: &str| {
        std::fs::read_to_string(std::path::Path::new(data_dir).join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let access = Access::new(AccessConfig::new(
        KeyRing::parse(&[read("signing-key")]).unwrap(),
        OrganizerTokens::parse::<&str>(&[]).unwrap(),
    ));
    (format!("Bearer {}", read("organizer-token")), access)
}

fn start_up(data_dir: &str, listen: &str, admin: &str) -> Child {
    spawn(&[
        "up",
        "--data-dir",
        data_dir,
        "--listen",
        listen,
        "--admin-listen",
        admin,
    ])
}

/// `up` holds pending rows in memory until a worker decides them. Killed with SIGKILL right
/// after a burst of 202s (some decided, some held, some still queued), then restarted on the
/// same data dir: every accepted purchase reaches a final state, and the counts agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_killed_mid_rush_loses_no_accepted_purchase() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let [port, admin_port] = free_ports::<2>();
    let (listen, admin) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{admin_port}"),
    );
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let up = wait_healthy(addr, start_up(&data, &listen, &admin), "up").await;
    let (organizer, access) = up_credentials(&data);
    let event = ticket_svc::testing::post_json_as(
        addr,
        "/events",
        &organizer,
        json!({"name": "DJ night", "tickets": 100, "max_per_buyer": 2}),
    )
    .await;
    assert_eq!(event.status, StatusCode::CREATED, "{}", event.text);
    let event = event.json["id"].as_i64().unwrap();
    let access = std::sync::Arc::new(access);

    // 8 buyers at a time, 240 purchases, half of them with an Idempotency-Key.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u32 {
        let access = std::sync::Arc::clone(&access);
        tasks.spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..30u32 {
                let n = t * 30 + i;
                let path = format!("/events/{event}/purchases");
                let email = Email::parse(&format!("b{n}@test.example")).unwrap();
                let session = format!("Bearer {}", access.session_for(&email, unix_now()).token);
                let key = format!("k{n}");
                let mut headers = vec![
                    ("content-type", "application/json"),
                    ("authorization", session.as_str()),
                ];
                if n % 2 == 0 {
                    headers.push(("idempotency-key", &key));
                }
                let r = ticket_svc::testing::call(
                    addr,
                    http::Method::POST,
                    &path,
                    &headers,
                    json!({"quantity": 1}).to_string(),
                )
                .await;
                assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
                accepted.push(r.json["purchase_id"].as_str().unwrap().to_owned());
            }
            accepted
        });
    }
    let mut accepted = Vec::new();
    while let Some(batch) = tasks.join_next().await {
        accepted.extend(batch.unwrap());
    }
    let mut up = up;
    up.kill().unwrap();
    up.wait().unwrap();

    let up = wait_healthy(addr, start_up(&data, &listen, &admin), "up after SIGKILL").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut confirmed = 0u64;
    for p in &accepted {
        loop {
            let r = get(addr, &format!("/purchases/{p}")).await;
            let status = r.json["status"].as_str().unwrap_or("").to_owned();
            if status == "confirmed" || status == "rejected" {
                if status == "confirmed" {
                    confirmed += r.json["quantity"].as_u64().unwrap();
                }
                break;
            }
            // 404 (held when killed, not yet decided again) or pending: the queue still has it.
            assert!(
                Instant::now() < deadline,
                "accepted purchase {p} never reached a final state after the restart (last: {} {})",
                r.status,
                r.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ev = get(addr, &format!("/events/{event}")).await;
    let sold = ev.json["sold"].as_u64().unwrap();
    assert_eq!(sold, confirmed, "sold is the sum of confirmed quantities");
    assert!(sold <= 100, "no oversell: {sold}");
    assert_eq!(
        sold, 100,
        "240 buyers of one ticket each, 100 tickets: all sold"
    );
    assert!(terminate(up).success(), "up drains and exits 0");
}

#[test]
fn startup_failures_are_one_clear_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let dead_broker = format!("127.0.0.1:{}", free_port());

    let out = ticket_svc(&[
        "api",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        &dead_broker,
        "--db",
        &db,
        "--connect-timeout-s",
        "1",
        "--signing-key",
        TEST_SIGNING_KEY,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the broker"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("ticket-svc:")).count(),
        1,
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = ticket_svc(&[
        "api",
        "--listen",
        &port,
        "--broker",
        &dead_broker,
        "--db",
        &db,
        "--signing-key",
        TEST_SIGNING_KEY,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {port}")), "{err}");

    // Bad credentials are refused before anything listens: one line, exit 1.
    for (flags, says) in [
        (["--signing-key", "k:short"], "needs at least 32"),
        (
            ["--organizer-token", "short"],
            "organizer token must be 16 to 256",
        ),
        (["--login-sender", "smtp://x"], "--login-sender"),
    ] {
        let mut args = vec![
            "api",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db,
            "--signing-key",
            TEST_SIGNING_KEY,
        ];
        args.extend(flags);
        let out = ticket_svc(&args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("ticket-svc:")).count(),
            1,
            "{err}"
        );
    }

    let out = ticket_svc(&[
        "worker",
        "--broker",
        &dead_broker,
        "--db",
        "mysql://nope",
        "--connect-timeout-s",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the store mysql://nope"), "{err}");
}

#[test]
fn demo_runs_the_whole_stack_and_checks_the_invariants() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.html");
    let out = ticket_svc(&[
        "demo",
        "--buyers",
        "300",
        "--tickets",
        "200",
        "--report",
        report.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("demo: every invariant held"), "{stdout}");
    assert!(stdout.contains("sold 200 of 200 tickets"), "{stdout}");
    assert!(
        stdout.contains("s after the rush's last answer"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("report: {}", report.display())),
        "{stdout}"
    );

    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.trim_end().ends_with("</html>"));
    for chart in ["Waiting room", "Throughput", "Latency", "Tickets sold"] {
        assert!(html.contains(&format!("aria-label=\"{chart}\"")), "{chart}");
    }
    assert_eq!(html.matches("<svg").count(), 4, "one svg per chart");
    assert!(
        stdout.contains("300 joined") && stdout.contains("300 admitted with a permit"),
        "the buyers went through the waiting room: {stdout}"
    );
    assert!(html.contains("<th>buyers</th><td>300</td>"), "{html}");
    assert!(html.contains("accepted purchases/s"));
    assert!(html.contains("p99"));
    assert!(html.contains("200 tickets)"), "confirmed tickets: {html}");
    assert!(html.contains("sold_out"), "rejections: {html}");
    assert!(html.contains("Every invariant held"));
    assert!(!html.contains("BROKEN"));
    assert!(!html.contains("<script"), "self-contained");
    assert!(!html.contains("no data"), "every chart has points: {html}");
}

#[test]
fn up_on_a_port_in_use_is_one_line_and_exit_1() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = ticket_svc(&[
        "up",
        "--listen",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("ticket-svc: starting the stack"), "{err}");
    assert!(last.contains("in use"), "{err}");
}

#[test]
fn bad_flags_exit_2() {
    let out = ticket_svc(&["rush", "--target", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ticket_svc(&["nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ticket_svc(&["api", "--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    // An API needs the signing key its sessions are checked with.
    let out = ticket_svc(&["api"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--signing-key"));
    // Checked with the flags, before a stack is started for nothing.
    let out = refused(
        &["demo", "--concurrency", "0"],
        "--concurrency",
        "1 to 4096",
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("ticketrush is up")
            && !String::from_utf8_lossy(&out.stdout).contains("is up"),
        "nothing started"
    );
    refused(
        &["worker", "--linger-ms", "5000"],
        "--linger-ms",
        "0..=1000",
    );
    refused(
        &["worker", "--store-patience-s", "60"],
        "--store-patience-s",
        "0..=15",
    );
}

/// Runs `args`, which must be refused as bad flags: exit 2, and an error naming `flag` and its
/// allowed `range`.
fn refused(args: &[&str], flag: &str, range: &str) -> Output {
    let out = ticket_svc(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(flag) && stderr.contains(range), "{stderr}");
    out
}

#[test]
fn rush_against_nothing_fails_with_one_clear_line() {
    let out = ticket_svc(&[
        "rush",
        "--target",
        "http://127.0.0.1:1",
        "--event",
        "1",
        "--buyers",
        "1",
        "--timeout-ms",
        "500",
        "--mailbox-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not read event 1"), "{err}");
}
