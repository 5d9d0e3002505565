use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::protocol::{FetchMode, Record};
use broker::testing::TestBroker;

use crate::crash::spawn_broker;

#[tokio::test]
async fn shutdown_mid_traffic_finishes_in_flight_produces() {
    let b = TestBroker::start().await;
    let c = b.client().await.unwrap();
    c.create_topic("s", 2).await.unwrap();
    let acked: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let c = b.client().await.unwrap();
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 {
                match c.produce("s", Record::new(format!("{t}-{i}"))).await {
                    Ok(a) => acked.lock().unwrap().push((a.partition, a.offset)),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tokio::time::timeout(Duration::from_secs(15), b.stop())
        .await
        .expect("shutdown drains within the drain timeout");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("no produce hangs across shutdown")
            .unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let b = TestBroker::start_in(dir, |_| {}).await;
    let stats = b.client().await.unwrap().stats("s").await.unwrap();
    let end: u64 = stats["topics"][0]["end_offset"].as_u64().unwrap();
    assert!(
        end >= acked.len() as u64,
        "every acknowledged record is in the log"
    );
    let _ = FetchMode::Shared;
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_broker(dir.path(), &[]).await;
    let pid = proc.child.id().expect("the child has a pid");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), proc.child.wait())
        .await
        .expect("the broker exits after draining")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn a_port_in_use_is_one_clear_line_and_a_failure_exit() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["serve", "--no-metrics", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("broker: cannot listen on"), "{stderr}");
    assert!(last.contains("in use"), "{stderr}");
}

#[tokio::test]
async fn an_unwritable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "serve",
            "--no-metrics",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open data dir"), "{stderr}");
}
