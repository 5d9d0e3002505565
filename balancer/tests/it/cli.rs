//! The real binary: one-line errors with a non-zero exit, SIGTERM drain with exit 0, SIGHUP
//! reload with a live keep-alive connection.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use balancer::testing::{Client, FakeBackend};

const BIN: &str = env!("CARGO_BIN_EXE_balancer");

fn run_to_end(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_give_one_line_and_a_nonzero_exit() {
    let (code, err) = run_to_end(&["--listen", "127.0.0.1:0", "--bogus"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, err) = run_to_end(&[
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:1,weight=0",
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("weight"));
    let (code, err) = run_to_end(&["--listen", "127.0.0.1:0", "--no-admin"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--backend"), "{err}");
}

#[test]
fn an_admin_listener_open_to_other_machines_needs_a_token_or_a_clear_yes() {
    let open = ["--listen", "127.0.0.1:0", "--backend", "127.0.0.1:1"];
    let (code, err) = run_to_end(&[&open[..], &["--admin-listen", "0.0.0.0:0"]].concat());
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--admin-token") && err.contains("--admin-insecure"),
        "{err}"
    );
    let (code, err) = run_to_end(&[&open[..], &["--admin-auth", "all"]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("needs --admin-token"), "{err}");
    let (code, err) = run_to_end(&[&open[..], &["--admin-token", ""]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("admin-token"), "{err}");
}

#[test]
fn port_in_use_and_unreadable_certificate_fail_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run_to_end(&["--listen", &addr, "--backend", "127.0.0.1:9", "--no-admin"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    let (code, err) = run_to_end(&[
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:9",
        "--no-admin",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot read /nonexistent/cert.pem"), "{err}");
}

/// A running balancer process; killed on drop if still alive.
struct Proc {
    child: Child,
    listen: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(BIN)
        .args(args)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-admin",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "balancer running"
                && let Some(addr) = v["fields"]["listen"].as_str()
            {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let listen = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("balancer reported its address");
    Proc { child, listen }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn wait_exit(child: &mut Child) -> i32 {
    for _ in 0..1000 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("balancer did not exit within 10 s");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let a = FakeBackend::start("a").await.unwrap();
    let backend = a.addr().to_string();
    let mut p = spawn(&["--backend", &backend, "--workers", "2"]);
    let addr = p.listen;
    let slow = tokio::spawn(async move {
        let mut c = Client::connect(addr).await.unwrap();
        c.get("/?delay_ms=400").await
    });
    for _ in 0..500 {
        if a.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.in_flight(), 1, "request reached the backend");
    signal(p.child.id(), "-TERM");
    let reply = slow.await.unwrap().expect("in-flight request finished");
    assert_eq!(reply.status, 200);
    assert_eq!(wait_exit(&mut p.child).await, 0);
}

#[tokio::test]
async fn sighup_reloads_the_config_file_without_dropping_connections() {
    let a = FakeBackend::start("a").await.unwrap();
    let b = FakeBackend::start("b").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("balancer.toml");
    std::fs::write(&file, format!("backends = [\"{}\"]\n", a.addr())).unwrap();
    let p = spawn(&["--config", file.to_str().unwrap(), "--workers", "1"]);
    let mut client = Client::connect(p.listen).await.unwrap();
    assert_eq!(
        client.get("/").await.unwrap().header("x-backend").unwrap(),
        "a"
    );
    std::fs::write(&file, format!("backends = [\"{}\"]\n", b.addr())).unwrap();
    signal(p.child.id(), "-HUP");
    let mut switched = false;
    for _ in 0..500 {
        let r = client
            .get("/")
            .await
            .expect("keep-alive connection survived the reload");
        if r.header("x-backend").as_deref() == Some("b") {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(switched, "reload moved traffic to b");
    assert!(!client.is_closed());
}
