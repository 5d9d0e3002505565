//! Tests of `log`.
use super::*;
use crate::storage::OsDisk;
use std::os::unix::fs::FileExt;

fn rec(i: u64) -> Record {
    Record::new(format!("record-{i:05}"))
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        max_record_bytes: 1 << 20,
    }
}

#[test]
fn append_read_and_roll() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    assert_eq!(report, RecoveryReport::default());
    for i in 0..200 {
        assert_eq!(log.append([&rec(i)], 10 + i).unwrap(), i);
    }
    assert!(
        log.segment_count() > 5,
        "rolled into {} segments",
        log.segment_count()
    );
    let all = log.read(0, 1000, usize::MAX, u64::MAX).unwrap();
    assert_eq!(all.len(), 200);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.record, rec(i as u64));
    }
    let mid = log.read(150, 10, usize::MAX, 155).unwrap();
    assert_eq!(
        mid.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![150, 151, 152, 153, 154]
    );
    drop(log);
    let (log, report) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.end_offset(), 200);
    assert_eq!(
        log.read(199, 1, usize::MAX, u64::MAX).unwrap()[0].record,
        rec(199)
    );
}

#[test]
fn recovery_cuts_a_torn_tail_and_keeps_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) =
        PartitionLog::open(OsDisk::shared(), dir.path(), LogConfig::default()).unwrap();
    for i in 0..10 {
        log.append([&rec(i)], i).unwrap();
    }
    let end = log.size_bytes();
    drop(log);
    let path = dir.path().join(super::super::segment::log_name(0));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // A record header whose body never made it; the zeros written ahead follow it.
    f.write_all_at(&[0, 0, 0, 200, 1, 2, 3], end).unwrap();
    drop(f);
    let (mut log, report) =
        PartitionLog::open(OsDisk::shared(), dir.path(), LogConfig::default()).unwrap();
    assert_eq!(
        report.truncated_bytes, 7,
        "the torn bytes are counted, not the zeros written ahead"
    );
    assert!(end > 0);
    assert!(report.reason.is_some());
    assert_eq!(log.end_offset(), 10);
    assert_eq!(log.append([&rec(10)], 99).unwrap(), 10);
    assert_eq!(log.read(0, 100, usize::MAX, u64::MAX).unwrap().len(), 11);
}

#[test]
fn recovery_cuts_from_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) =
        PartitionLog::open(OsDisk::shared(), dir.path(), LogConfig::default()).unwrap();
    for i in 0..10 {
        log.append([&rec(i)], i).unwrap();
    }
    let end = log.size_bytes() as usize;
    drop(log);
    let path = dir.path().join(super::super::segment::log_name(0));
    let mut bytes = std::fs::read(&path).unwrap();
    let one = end / 10;
    bytes[one * 6 + 30] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let (log, report) =
        PartitionLog::open(OsDisk::shared(), dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), 6, "records 0..6 survive, 6.. are cut");
    assert_eq!(report.truncated_bytes, (end - one * 6) as u64);
    let got = log.read(0, 100, usize::MAX, u64::MAX).unwrap();
    assert_eq!(got.len(), 6);
}

#[test]
fn preallocated_zeros_are_not_a_cut_and_sealed_segments_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    for i in 0..100 {
        log.append([&rec(i)], i).unwrap();
    }
    let sizes: Vec<u64> = log.segments.iter().map(Segment::size).collect();
    drop(log);
    let (log, report) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.reason, None);
    assert_eq!(log.end_offset(), 100);
    for (seg, size) in log.segments.iter().zip(&sizes) {
        assert_eq!(seg.size(), *size);
    }
    // Sealed segments were cut to their records; only the active one has zeros ahead.
    let sealed = &log.segments[0];
    assert_eq!(std::fs::metadata(sealed.path()).unwrap().len(), sizes[0]);
}

#[test]
fn a_lost_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    for i in 0..100 {
        log.append([&rec(i)], i).unwrap();
    }
    drop(log);
    std::fs::write(dir.path().join(format!("{:020}.index", 0)), b"xx").unwrap();
    let (log, report) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    assert_eq!(report.rebuilt_indexes, 1);
    assert_eq!(report.truncated_bytes, 0, "a rebuilt index cuts nothing");
    assert_eq!(log.read(0, 1000, usize::MAX, u64::MAX).unwrap().len(), 100);
}

#[test]
fn a_failed_write_that_came_back_past_the_next_segment_is_cut_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    for i in 0..60 {
        log.append([&rec(i)], i).unwrap();
    }
    let second = log.segments[1].base();
    let first_size = log.segments[0].size();
    drop(log);
    // The first segment once took a write of offset `second` that failed and was cut; the
    // cut was lost in a crash, the write was not.
    let mut extra = BytesMut::new();
    record::encode(second, 0, &Record::new("refused"), &mut extra);
    let path = dir.path().join(super::super::segment::log_name(0));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&extra, first_size).unwrap();
    drop(f);
    std::fs::remove_file(dir.path().join(format!("{:020}.index", 0))).unwrap();
    let (log, report) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    assert_eq!(report.truncated_bytes, extra.len() as u64);
    let all = log.read(0, 1000, usize::MAX, u64::MAX).unwrap();
    assert_eq!(all.len(), 60);
    assert_eq!(all[second as usize].record, rec(second));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), first_size);
}

#[test]
fn an_index_with_a_flipped_position_is_rebuilt_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    for i in 0..100 {
        log.append([&rec(i)], i).unwrap();
    }
    drop(log);
    // Still increasing, still inside the file, first position still 0: only the checksum
    // can tell.
    let path = dir.path().join(format!("{:020}.index", 0));
    let mut raw = std::fs::read(&path).unwrap();
    raw[7] ^= 1;
    std::fs::write(&path, raw).unwrap();
    let (log, report) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    assert_eq!(report.rebuilt_indexes, 1);
    let all = log.read(0, 1000, usize::MAX, u64::MAX).unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all[1].record, rec(1));
}

#[test]
fn truncation_cuts_across_segments_durably_and_appends_go_on_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    for i in 0..120 {
        log.append([&rec(i)], 10 + i).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 3);
    assert_eq!(log.truncate_to(130).unwrap(), 0, "past the end: nothing");
    assert_eq!(log.truncate_to(45).unwrap(), 75);
    assert_eq!(log.end_offset(), 45);
    assert!(log.segment_count() < segments);
    for i in 45..50 {
        assert_eq!(
            log.append([&Record::new(format!("new-{i}"))], 99).unwrap(),
            i
        );
    }
    let reopened = || {
        PartitionLog::open(OsDisk::shared(), dir.path(), small())
            .unwrap()
            .0
    };
    let check = |log: &PartitionLog| {
        let all = log.read(0, 1000, usize::MAX, u64::MAX).unwrap();
        assert_eq!(all.len(), 50);
        assert_eq!(all[44].record, rec(44));
        assert_eq!(all[45].record, Record::new("new-45".to_string()));
    };
    check(&log);
    drop(log);
    let mut log = reopened();
    check(&log);
    // Down to a segment's base, and to nothing.
    assert_eq!(log.truncate_to(0).unwrap(), 50);
    assert_eq!(log.end_offset(), 0);
    assert_eq!(log.append([&rec(0)], 1).unwrap(), 0);
    drop(log);
    assert_eq!(reopened().end_offset(), 1);
}

#[test]
fn a_log_started_again_past_its_end_holds_nothing_below_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    for i in 0..60 {
        log.append([&rec(i)], 10 + i).unwrap();
    }
    assert!(log.segment_count() > 1);
    assert_eq!(log.restart_at(500).unwrap(), 60);
    assert_eq!((log.start_offset(), log.end_offset()), (500, 500));
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.restart_at(500).unwrap(), 0, "already there: nothing");
    assert_eq!(log.append([&rec(500)], 1).unwrap(), 500);
    drop(log);
    let (log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (500, 501));
    let all = log.read(0, 1000, usize::MAX, u64::MAX).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].offset, &all[0].record), (500, &rec(500)));
}

#[test]
fn delete_front_keeps_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    for i in 0..100 {
        log.append([&rec(i)], i).unwrap();
    }
    let n = log.segment_count();
    let removed = log.delete_front(|end, _, _| end <= 50).unwrap();
    assert!(removed > 0 && removed < n);
    assert!(log.start_offset() <= 50);
    let removed_all = log.delete_front(|_, _, _| true).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert!(removed_all > 0);
    assert_eq!(log.end_offset(), 100);
}

#[test]
fn a_sealed_segment_that_lost_its_tail_ends_the_log_instead_of_stopping_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    for i in 0..100 {
        log.append([&rec(i)], i).unwrap();
    }
    assert!(log.segment_count() > 3);
    let second = log.segments[1].base();
    let third = log.segments[2].base();
    // Every record has the same size: cut in the middle of the segment's third record.
    let cut_at = 2 * record::encoded_size(&rec(0)) as u64 + 5;
    drop(log);
    // A power cut before the second segment's last records were synced: its index (written
    // at seal) is gone, its log ends early, and later segments hold records never acked.
    let seg = dir.path().join(super::super::segment::log_name(second));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut_at)
        .unwrap();
    std::fs::remove_file(dir.path().join(format!("{second:020}.index"))).unwrap();
    let (mut log, report) = PartitionLog::open(OsDisk::shared(), dir.path(), small()).unwrap();
    assert_eq!(log.end_offset(), second + 2);
    assert_eq!(log.segment_count(), 2, "the segments after it are removed");
    assert!(report.truncated_bytes > 0);
    assert!(
        !dir.path()
            .join(super::super::segment::log_name(third))
            .exists()
    );
    assert_eq!(log.append([&rec(1000)], 1).unwrap(), second + 2);
    let all = log.read(0, 1000, usize::MAX, u64::MAX).unwrap();
    assert_eq!(all.len() as u64, second + 3);
}

#[cfg(feature = "simulation")]
#[test]
fn a_failed_sync_cuts_what_it_may_have_lost_from_the_log() {
    use crate::sim::disk::{Faults, SimDisk};
    let disk = SimDisk::new(
        1,
        Faults {
            p_sync_eio: 1.0,
            ..Faults::default()
        },
    );
    disk.arm(false);
    super::super::create_dir_durable(&disk, Path::new("/"), Path::new("/p")).unwrap();
    let (mut log, _) =
        PartitionLog::open(Arc::new(disk.clone()), Path::new("/p"), small()).unwrap();
    for i in 0..5 {
        log.append([&rec(i)], i).unwrap();
    }
    let taken = log.take_unsynced();
    for u in &taken {
        u.file.sync_data().unwrap();
    }
    log.synced(&taken);
    for i in 5..8 {
        log.append([&rec(i)], i).unwrap();
    }
    disk.arm(true);
    let taken = log.take_unsynced();
    assert!(taken.iter().any(|u| u.file.sync_data().is_err()));
    log.sync_failed(&taken);
    assert_eq!(log.end_offset(), 5, "the unsynced records are cut");
    assert_eq!(log.read(0, 100, usize::MAX, u64::MAX).unwrap().len(), 5);
    disk.arm(false);
    drop(log);
    disk.crash();
    let (log, _) = PartitionLog::open(Arc::new(disk), Path::new("/p"), small()).unwrap();
    assert_eq!(log.end_offset(), 5);
}
