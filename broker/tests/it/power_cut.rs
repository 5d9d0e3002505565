//! Power cuts of the real `broker` binary: its data directory on a FUSE file system that keeps
//! unsynced writes and names in memory (`lazy_fs`), so a cut loses what a machine losing power
//! would, which a SIGKILL never does. SIGKILL, cut, restart, check what was acknowledged:
//! records, and a group's progress.
//! Skipped with a printed reason where FUSE cannot be mounted.

use std::time::Duration;

use crate::crash::{
    Proc, ack_until_killed, check_group_progress, lost_records, produce_until_killed, spawn_broker,
};
use crate::lazy_fs::LazyFs;

fn mount_or_skip(test: &str) -> Option<LazyFs> {
    match LazyFs::mount() {
        Ok(fs) => Some(fs),
        Err(why) => {
            eprintln!("skipped: {test} needs a FUSE mount ({why})");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_no_acknowledged_record_under_fsync_always() {
    let Some(mut fs) = mount_or_skip("a_power_cut_loses_no_acknowledged_record_under_fsync_always")
    else {
        return;
    };
    let data = fs.path().join("data");
    let mut proc = spawn_broker(&data, &["--fsync", "always"]).await;
    let acked = produce_until_killed(&mut proc, Duration::from_millis(800)).await;
    assert!(acked.len() > 50, "the load ran ({} acked)", acked.len());
    fs.power_cut().unwrap();
    assert!(fs.lost_writes() > 0, "the cut dropped unsynced writes");
    let mut proc = spawn_broker(&data, &[]).await;
    let lost = lost_records(&proc.addr, &acked).await;
    stop(&mut proc).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_no_acknowledged_group_progress_under_fsync_always() {
    let Some(mut fs) =
        mount_or_skip("a_power_cut_loses_no_acknowledged_group_progress_under_fsync_always")
    else {
        return;
    };
    let data = fs.path().join("data");
    let mut proc = spawn_broker(&data, &["--fsync", "always"]).await;
    let acked = ack_until_killed(&mut proc).await;
    fs.power_cut().unwrap();
    let mut proc = spawn_broker(&data, &[]).await;
    check_group_progress(&proc.addr, &acked).await;
    stop(&mut proc).await;
}

/// The control: without syncs, the same cut loses acknowledged records (that is what
/// `--fsync never` promises), so the test above proves something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_does_lose_acknowledged_records_under_fsync_never() {
    let Some(mut fs) =
        mount_or_skip("a_power_cut_does_lose_acknowledged_records_under_fsync_never")
    else {
        return;
    };
    let data = fs.path().join("data");
    let mut proc = spawn_broker(&data, &["--fsync", "never"]).await;
    let acked = produce_until_killed(&mut proc, Duration::from_millis(500)).await;
    assert!(acked.len() > 50, "the load ran ({} acked)", acked.len());
    fs.power_cut().unwrap();
    let mut proc = spawn_broker(&data, &[]).await;
    let lost = lost_records(&proc.addr, &acked).await;
    stop(&mut proc).await;
    assert!(
        !lost.is_empty(),
        "a power cut under --fsync never lost nothing: the file system kept unsynced writes"
    );
}

/// Ends the broker and waits for it, so that the file system can be unmounted.
async fn stop(proc: &mut Proc) {
    let _ = proc.child.kill().await;
}
