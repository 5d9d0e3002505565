//! Micro-benchmarks of one partition's log through the broker's storage API: append 100 ×
//! 100-byte records without a sync and with the `fdatasync` a produce waits for under
//! `--fsync always`, and read 100 records back. One setup serves all three, so the figures
//! describe the same records in the same kind of log.
#![allow(clippy::unwrap_used)]
#![allow(missing_docs)] // criterion_group! generates undocumented items

use broker::protocol::Record;
use broker::storage::{LogConfig, PartitionLog};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// Records per append and per read.
const BATCH: u64 = 100;
/// Batches written before the read benchmark starts.
const FILLED_BATCHES: u64 = 100;

/// A batch of 100-byte records and an empty log in a fresh temp dir (kept alive with it).
fn setup() -> (Vec<Record>, PartitionLog, tempfile::TempDir) {
    let records = (0..BATCH)
        .map(|_| Record::new(Bytes::from(vec![b'x'; 100])))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(
        broker::storage::OsDisk::shared(),
        dir.path(),
        LogConfig::default(),
    )
    .unwrap();
    (records, log, dir)
}

/// Appends one batch; with `sync`, fdatasyncs the files it touched, as a partition's flush does.
fn append(log: &mut PartitionLog, records: &[Record], sync: bool) {
    log.append(records.iter(), 1).unwrap();
    let taken = log.take_unsynced();
    if sync {
        for u in &taken {
            u.file.sync_data().unwrap();
        }
        log.synced(&taken);
    }
}

fn log(c: &mut Criterion) {
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(BATCH));
    for (name, sync) in [
        ("append_100x100B_no_sync", false),
        ("append_100x100B_fdatasync", true),
    ] {
        g.bench_function(name, |b| {
            let (records, mut log, _dir) = setup();
            b.iter(|| append(&mut log, &records, sync));
        });
    }
    g.bench_function("read_100x100B", |b| {
        let (records, mut log, _dir) = setup();
        for _ in 0..FILLED_BATCHES {
            append(&mut log, &records, false);
        }
        let mut at = 0u64;
        b.iter(|| {
            let got = log.read(at, BATCH as usize, usize::MAX, u64::MAX).unwrap();
            at = (at + BATCH) % ((FILLED_BATCHES - 1) * BATCH);
            black_box(got);
        });
    });
    g.finish();
}

criterion_group!(benches, log);
criterion_main!(benches);
