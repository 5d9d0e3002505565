//! Tests of `partition`.
use super::*;
use crate::storage::OsDisk;
use prometheus_client::registry::Registry;

fn open(dir: &Path, policy: FsyncPolicy) -> Partition {
    open_with(dir, policy, &mut Registry::default())
}

fn open_with(dir: &Path, policy: FsyncPolicy, registry: &mut Registry) -> Partition {
    open_in(dir, policy, registry, CommitMode::Local)
}

fn open_in(
    dir: &Path,
    policy: FsyncPolicy,
    registry: &mut Registry,
    mode: CommitMode,
) -> Partition {
    let metrics = Arc::new(Metrics::new(registry));
    Partition::open(
        &Host::os(),
        "t",
        0,
        dir,
        LogConfig::default(),
        policy,
        Duration::from_secs(60),
        Arc::new(Notify::new()),
        metrics,
        mode,
    )
    .unwrap()
    .0
}

fn rec(payload: &str, dedup: Option<&str>) -> Record {
    let r = Record::new(payload.to_string());
    match dedup {
        Some(id) => r.with_dedup_id(id),
        None => r,
    }
}

/// Waits for the commit an append waits on (flushed by the sync thread: no park hook here).
async fn committed(w: Wait) -> Result<(), StorageError> {
    match w {
        Wait::Done => Ok(()),
        Wait::Fenced => Err(StorageError::Fenced),
        Wait::Pending(rx) => tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("committed in time")
            .expect("the partition answers"),
    }
}

fn payloads(p: &Partition) -> Vec<(u64, String)> {
    p.read(0, 100, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|r| {
            let text = String::from_utf8(r.record.payload.to_vec()).unwrap();
            (r.offset, text)
        })
        .collect()
}

#[tokio::test]
async fn appends_are_read_in_order_once_committed_under_every_policy() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(20)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path(), policy);
        let (a, b, c) = (rec("a", None), rec("b", None), rec("c", None));
        let first = p.append(&[&a, &b]).unwrap();
        let second = p.append(&[&c]).unwrap();
        assert_eq!(first.answers, [(0, false), (1, false)]);
        assert_eq!(second.answers, [(2, false)]);
        committed(first.committed).await.unwrap();
        committed(second.committed).await.unwrap();
        assert_eq!(p.readable_end(), 3, "{policy:?}");
        let want: Vec<(u64, String)> = vec![(0, "a".into()), (1, "b".into()), (2, "c".into())];
        assert_eq!(payloads(&p), want, "{policy:?}");
        p.close();
    }
}

#[tokio::test]
async fn a_repeated_dedup_id_gets_the_first_offset_even_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), FsyncPolicy::Always);
    let (x, y, x_again) = (
        rec("x", Some("id-x")),
        rec("y", None),
        rec("x2", Some("id-x")),
    );
    let first = p.append(&[&x, &y]).unwrap();
    // Within one request, too.
    let again = p.append(&[&x_again, &x_again]).unwrap();
    assert_eq!(again.answers, [(0, true), (0, true)]);
    committed(again.committed).await.unwrap();
    committed(first.committed).await.unwrap();
    let want: Vec<(u64, String)> = vec![(0, "x".into()), (1, "y".into())];
    assert_eq!(payloads(&p), want, "the duplicate was not written");
    // Committed already: answered without waiting.
    let later = p.append(&[&x_again]).unwrap();
    assert!(matches!(later.committed, Wait::Done));
    p.close();
}

#[tokio::test]
async fn an_acknowledgement_under_always_follows_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let p = open_with(dir.path(), FsyncPolicy::Always, &mut registry);
    let a = rec("a", None);
    committed(p.append(&[&a]).unwrap().committed).await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "broker_fsync_batch_records_sum 1.0"),
        "one record synced before the answer:\n{text}"
    );
    p.close();
}

#[test]
fn closing_writes_and_syncs_what_is_buffered_and_refuses_more() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), FsyncPolicy::Never);
    let records: Vec<Record> = (0..5).map(|i| rec(&format!("r{i}"), None)).collect();
    let refs: Vec<&Record> = records.iter().collect();
    p.append(&refs).unwrap();
    p.close();
    assert!(matches!(p.append(&refs), Err(StorageError::Closed)));
    assert_eq!(p.readable_end(), 5);
    drop(p);
    let (log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), 5, "on disk after close");
}

/// Waits until the partition's durable end reaches `end`.
async fn durable_to(p: &Partition, end: u64) {
    let mut d = p.durable();
    tokio::time::timeout(Duration::from_secs(10), d.wait_for(|d| d.end >= end))
        .await
        .expect("durable in time")
        .expect("the partition answers");
}

/// A replicated partition under `--fsync always`.
fn open_replicated(dir: &Path) -> Partition {
    open_in(
        dir,
        FsyncPolicy::Always,
        &mut Registry::default(),
        CommitMode::Replicated,
    )
}

/// A leader's record at `offset`, with its own timestamp.
fn stored(offset: u64, dedup: &str) -> StoredRecord {
    StoredRecord {
        offset,
        timestamp_ms: 1_000 + offset,
        record: rec(&format!("r{offset}"), Some(dedup)),
    }
}

#[tokio::test]
async fn a_replicated_partition_commits_only_what_replication_reports_and_cuts_only_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_replicated(dir.path());
    // A leader's records, offsets and timestamps kept; a gap is refused.
    assert_eq!(
        p.append_replicated(&[stored(0, "a"), stored(1, "b")])
            .unwrap(),
        2
    );
    assert!(p.append_replicated(&[stored(5, "x")]).is_err());
    assert_eq!(p.append_replicated(&[stored(2, "c")]).unwrap(), 3);
    durable_to(&p, 3).await;
    assert_eq!(p.readable_end(), 0, "durable here is not committed");
    p.advance_commit(1);
    assert_eq!(p.readable_end(), 1);
    let read = p.read_written(0, 10, 1 << 20).unwrap();
    assert_eq!(
        read.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>(),
        [1_000, 1_001, 1_002]
    );
    // A divergent tail is cut above the commit point, never below it.
    assert!(p.truncate_to(0).is_err());
    assert_eq!(p.truncate_to(1).unwrap(), 2);
    assert_eq!(p.written_end(), 1);
    assert_eq!(p.durable().borrow().end, 1);
    // The cut records' dedup ids are forgotten: "b" is appended again, at 1.
    let again = rec("again", Some("b"));
    assert_eq!(p.append(&[&again]).unwrap().answers, [(1, false)]);
    p.close();
}

#[tokio::test]
async fn a_replicated_partition_started_again_at_its_leaders_start_takes_records_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let p = open_replicated(dir.path());
    p.append_replicated(&[stored(0, "a"), stored(1, "b")])
        .unwrap();
    durable_to(&p, 2).await;
    p.advance_commit(2);
    // Clearing cuts committed records too (a restart's first step); nothing is read after.
    assert_eq!(p.clear().unwrap(), 2);
    assert_eq!((p.start_offset(), p.written_end()), (0, 0));
    p.restart_at(40).unwrap();
    assert_eq!((p.start_offset(), p.written_end()), (40, 40));
    assert_eq!(p.durable().borrow().end, 40, "an empty log is durable");
    assert_eq!(
        p.readable_end(),
        40,
        "everything below the leader's start is committed"
    );
    // The leader's records follow from its start; a record below it is refused.
    assert!(p.append_replicated(&[stored(39, "x")]).is_err());
    assert_eq!(p.append_replicated(&[stored(40, "c")]).unwrap(), 41);
    durable_to(&p, 41).await;
    p.advance_commit(41);
    assert_eq!(payloads(&p), [(40, "r40".to_string())]);
    // The cleared records' dedup ids are gone with them: "a" is a new record.
    assert_eq!(
        p.append(&[&rec("again", Some("a"))]).unwrap().answers,
        [(41, false)]
    );
    p.close();
    drop(p);
    let (log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), LogConfig::default()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (40, 42));
}
