//! A full disk: produces fail with a clear error, nothing acknowledged is lost or changed, the
//! broker keeps answering (a fetch that must first count its deliveries on disk fails with a
//! clear error too), and once space is back produces and fetches succeed again without a
//! restart (a record that failed is not taken for a duplicate when it is sent again).
//! Needs root to mount a small tmpfs; skipped with a printed reason otherwise.

use std::time::Duration;

use broker::protocol::{ErrorCode, FetchMode, Record};
use broker::testing::{TestBroker, Tmpfs};

use crate::{consumer, fetch_n};

#[tokio::test]
async fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let mount_point = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(mount_point.path(), "2m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "skipped: a_full_disk_is_a_clear_error_and_loses_nothing needs to mount a tmpfs ({why})"
            );
            return;
        }
    };
    let data = tempfile::tempdir_in(mount_point.path()).unwrap();
    let b = TestBroker::start_in(data, |c| c.segment_bytes = 64 * 1024).await;
    let c = b.client().await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    let mut acked = Vec::new();
    let mut failure = None;
    for i in 0..4000u32 {
        let payload = format!("{i:06}-{}", "x".repeat(1000));
        let record = Record::new(payload.clone()).with_dedup_id(format!("r{i}"));
        match c.produce("t", record).await {
            Ok(a) => acked.push((a.offset, payload)),
            Err(e) => {
                failure = Some((e, format!("r{i}")));
                break;
            }
        }
    }
    let (failure, failed_id) = failure.expect("a 2 MiB disk fills up before 4 MB of records");
    assert_eq!(failure.error_code(), Some(ErrorCode::Storage), "{failure}");
    assert!(
        failure.to_string().to_lowercase().contains("no space"),
        "the error says why: {failure}"
    );
    assert!(
        acked.len() > 100,
        "records went in before the disk filled ({})",
        acked.len()
    );
    // Still answering: stats; a fetch says why it cannot hand anything out.
    let stats = c.stats("t").await.unwrap();
    assert_eq!(stats["topics"][0]["end_offset"], acked.len());
    let con = consumer(&c, "t", "g", FetchMode::Shared)
        .max_records(5000)
        .prefetch(10_000);
    if let Err(e) = con.fetch().await {
        assert_eq!(e.error_code(), Some(ErrorCode::Storage), "{e}");
        assert!(e.to_string().to_lowercase().contains("no space"), "{e}");
    }
    // Space comes back: every acknowledged record reads back intact; produces go on without a
    // restart, right after the last good one. The record that failed, sent again with its
    // dedup id, is appended, not answered as a duplicate of an offset that holds nothing.
    fs.resize("16m");
    let got = fetch_n(&con, acked.len(), Duration::from_secs(10)).await;
    assert_eq!(got.len(), acked.len());
    for (d, (offset, payload)) in got.iter().zip(&acked) {
        assert_eq!(d.offset, *offset);
        assert_eq!(d.record.payload.as_ref(), payload.as_bytes());
    }
    let after = c
        .produce("t", Record::new("after").with_dedup_id(failed_id.clone()))
        .await
        .unwrap();
    assert!(!after.duplicate, "the failed record was never written");
    assert_eq!(after.offset, acked.len() as u64);
    let again = c
        .produce("t", Record::new("after").with_dedup_id(failed_id))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.offset, after.offset);
    // And a restart recovers exactly that.
    drop((con, c));
    let data = b.stop().await;
    let b = TestBroker::start_in(data, |c| c.segment_bytes = 64 * 1024).await;
    let c = b.client().await.unwrap();
    let stats = c.stats("t").await.unwrap();
    assert_eq!(stats["topics"][0]["end_offset"], acked.len() + 1);
    drop(c);
    drop(b.stop().await);
    drop(fs);
}
