//! Durable consumer-group progress: a snapshot plus a journal of entries since it.
//!
//! Files in `groups/<topic>/<group>/`:
//!
//! `group.json` — the group's configuration, written once (temp file, fsync, rename).
//!
//! `snapshot` — progress at some point, replaced atomically (temp file, fsync, rename, fsync dir):
//!
//! | bytes | field                                             |
//! |-------|---------------------------------------------------|
//! | 8     | magic `TRGSNAP2` (`TRGSNAP1`: the same without the attempts, still read) |
//! | 4     | partition count `P`                               |
//! | per partition: 8 committed, 4 count `N`, `N` × 8 acked offsets, 4 count `M`, `M` × (8 offset, 4 deliveries), 8 mark |
//! | 4     | CRC32C of everything before it                     |
//!
//! `acks.log` — 16-byte entries: CRC32C (`u32`, of the next 12 bytes), a `u32` word, an offset
//! (`u64`). A word with its top bit clear is a partition: the record is done (acknowledged or
//! dead-lettered). A word with its top bit set is a delivery count: bits 16–30 the number of
//! deliveries so far (at most 32,767), bits 0–15 the partition; with a count of 0 it is the
//! partition's delivery-count mark instead, the offset field being the mark (every unfinished
//! offset below it without a count of its own was delivered at most once). Counts and marks
//! are written, and synced under `--fsync always`, before the deliveries they cover are handed
//! out, so a record is never delivered more often than the group's maximum. Recovery
//! replays entries until the first torn or bad one and cuts the file there (an entry is written
//! before what it records is answered, so a cut entry was never answered to anyone).
//!
//! The journal keeps its own mirror of the progress it has written, so compaction (snapshot,
//! then empty the log) needs nothing from the caller and cannot race with new entries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::progress::PartitionProgress;
use super::state::GroupConfig;
use crate::storage::{Disk, FileRef, StorageError};

const MAGIC_V1: &[u8; 8] = b"TRGSNAP1";
const MAGIC: &[u8; 8] = b"TRGSNAP2";
/// Bytes of one entry, in the journal and on the wire (`PROTOCOL.md`, GroupProgress).
pub const ENTRY_BYTES: usize = 16;
/// The word's top bit: a delivery count, not a done record.
const DELIVERIES_FLAG: u32 = 0x8000_0000;
/// The most deliveries an entry can record.
pub const MAX_RECORDED_DELIVERIES: u32 = 0x7FFF;

/// What one journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The record is done: acknowledged or dead-lettered.
    Done {
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
    },
    /// Every unfinished offset below `mark` without a count of its own was delivered at most
    /// once.
    Counted {
        /// Partition.
        partition: u32,
        /// The mark.
        mark: u64,
    },
    /// The record has been handed out this many times (at least once).
    Delivered {
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// Deliveries so far (stored up to [`MAX_RECORDED_DELIVERIES`]).
        attempts: u32,
    },
}

impl Entry {
    /// The entry's 16 bytes: checksum, word, offset.
    pub fn encode(self) -> [u8; ENTRY_BYTES] {
        let (word, offset) = match self {
            Self::Done { partition, offset } => (partition & !DELIVERIES_FLAG, offset),
            Self::Counted { partition, mark } => (DELIVERIES_FLAG | (partition & 0xFFFF), mark),
            Self::Delivered {
                partition,
                offset,
                attempts,
            } => (
                DELIVERIES_FLAG
                    | (attempts.clamp(1, MAX_RECORDED_DELIVERIES) << 16)
                    | (partition & 0xFFFF),
                offset,
            ),
        };
        let mut e = [0u8; ENTRY_BYTES];
        e[4..8].copy_from_slice(&word.to_be_bytes());
        e[8..16].copy_from_slice(&offset.to_be_bytes());
        let crc = crc32c::crc32c(&e[4..]);
        e[..4].copy_from_slice(&crc.to_be_bytes());
        e
    }

    /// The entry in `raw`, or `None` if its checksum fails.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let crc = u32::from_be_bytes(raw.get(..4)?.try_into().ok()?);
        let body = raw.get(4..ENTRY_BYTES)?;
        if crc32c::crc32c(body) != crc {
            return None;
        }
        let word = u32::from_be_bytes(body.get(..4)?.try_into().ok()?);
        let offset = u64::from_be_bytes(body.get(4..12)?.try_into().ok()?);
        Some(if word & DELIVERIES_FLAG == 0 {
            Self::Done {
                partition: word,
                offset,
            }
        } else {
            match (word >> 16) & MAX_RECORDED_DELIVERIES {
                0 => Self::Counted {
                    partition: word & 0xFFFF,
                    mark: offset,
                },
                attempts => Self::Delivered {
                    partition: word & 0xFFFF,
                    offset,
                    attempts,
                },
            }
        })
    }
}

/// What the journal knows of one partition.
#[derive(Debug, Clone, Default)]
struct Mirror {
    committed: u64,
    acked: BTreeSet<u64>,
    attempts: BTreeMap<u64, u32>,
    mark: u64,
}

impl Mirror {
    fn progress(&self) -> PartitionProgress {
        PartitionProgress {
            committed: self.committed,
            acked: self.acked.iter().copied().collect(),
            attempts: self.attempts.iter().map(|(o, a)| (*o, *a)).collect(),
            mark: self.mark,
        }
    }
}
impl From<&PartitionProgress> for Mirror {
    fn from(p: &PartitionProgress) -> Self {
        Self {
            committed: p.committed,
            acked: p.acked.iter().copied().collect(),
            attempts: p.attempts.iter().copied().collect(),
            mark: p.mark,
        }
    }
}

/// The progress `entries` record, over `partitions` partitions (entries of a partition beyond
/// them are left out).
pub fn progress_of(entries: &[Entry], partitions: usize) -> Vec<PartitionProgress> {
    let mut mirror = vec![Mirror::default(); partitions];
    for e in entries {
        apply(&mut mirror, *e);
    }
    mirror.iter().map(Mirror::progress).collect()
}

/// Compact when the journal holds this many entries.
const COMPACT_ENTRIES: u64 = 100_000;

/// The group's persisted progress and its journal file.
#[derive(Debug)]
pub struct Journal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    log_path: PathBuf,
    log: FileRef,
    entries: u64,
    /// Entries known to be on disk.
    synced_entries: u64,
    /// Set by a failed sync: the journal takes no more entries.
    failed: bool,
    mirror: Vec<Mirror>,
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    let f = disk
        .open(&tmp)
        .map_err(|e| StorageError::io("create", &tmp, e))?;
    f.set_len(0)
        .and_then(|()| f.write_all_at(bytes, 0))
        .map_err(|e| StorageError::io("write", &tmp, e))?;
    f.sync_all()
        .map_err(|e| StorageError::io("fsync", &tmp, e))?;
    disk.rename(&tmp, path)
        .map_err(|e| StorageError::io("rename", path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(disk, dir)?;
    }
    Ok(())
}

/// Fsyncs a directory so that a rename or a new file in it is durable.
pub fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<(), StorageError> {
    disk.sync_dir(dir)
        .map_err(|e| StorageError::io("fsync dir", dir, e))
}

/// Reads a group's configuration, if it was created before.
pub fn read_config(disk: &dyn Disk, dir: &Path) -> Result<Option<GroupConfig>, StorageError> {
    let path = dir.join("group.json");
    match crate::storage::read_stable(disk, &path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                offset: 0,
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read", path, e)),
    }
}

/// Writes a group's configuration.
pub fn write_config(disk: &dyn Disk, dir: &Path, config: &GroupConfig) -> Result<(), StorageError> {
    disk.create_dir_all(dir)
        .map_err(|e| StorageError::io("create", dir, e))?;
    let raw = serde_json::to_vec_pretty(config).unwrap_or_default();
    write_atomic(disk, &dir.join("group.json"), &raw)
}

fn corrupt(path: &Path, reason: &str) -> StorageError {
    StorageError::Corrupt {
        offset: 0,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_snapshot(
    disk: &dyn Disk,
    path: &Path,
    partitions: usize,
) -> Result<Vec<Mirror>, StorageError> {
    let empty = vec![Mirror::default(); partitions];
    let raw = match crate::storage::read_stable(disk, path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty),
        Err(e) => return Err(StorageError::io("read", path, e)),
    };
    let body_len = raw
        .len()
        .checked_sub(4)
        .ok_or_else(|| corrupt(path, "snapshot shorter than its checksum"))?;
    let (body, crc) = raw.split_at(body_len);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err(corrupt(path, "snapshot checksum mismatch"));
    }
    let with_attempts = match body.get(..8) {
        Some(m) if m == MAGIC => true,
        Some(m) if m == MAGIC_V1 => false,
        _ => return Err(corrupt(path, "not a group snapshot")),
    };
    let body = bytes::Bytes::copy_from_slice(body.get(8..).unwrap_or(&[]));
    let mut r = crate::codec::Reader::new(&body);
    let bad = |e: crate::codec::DecodeError| corrupt(path, &e.to_string());
    let n = r.count("partitions", 12).map_err(bad)?;
    let mut out = Vec::with_capacity(partitions.max(n));
    for _ in 0..n {
        let mut m = Mirror {
            committed: r.u64("committed").map_err(bad)?,
            ..Mirror::default()
        };
        for _ in 0..r.count("acked", 8).map_err(bad)? {
            m.acked.insert(r.u64("acked").map_err(bad)?);
        }
        if with_attempts {
            for _ in 0..r.count("attempts", 12).map_err(bad)? {
                let offset = r.u64("attempts.offset").map_err(bad)?;
                m.attempts
                    .insert(offset, r.u32("attempts.count").map_err(bad)?);
            }
            m.mark = r.u64("mark").map_err(bad)?;
        }
        out.push(m);
    }
    out.resize(partitions.max(n), Mirror::default());
    Ok(out)
}

fn apply(mirror: &mut [Mirror], entry: Entry) {
    let (partition, offset) = match entry {
        Entry::Done { partition, offset }
        | Entry::Delivered {
            partition, offset, ..
        } => (partition, offset),
        Entry::Counted { partition, mark } => (partition, mark),
    };
    let Some(m) = usize::try_from(partition)
        .ok()
        .and_then(|i| mirror.get_mut(i))
    else {
        return;
    };
    let done = offset < m.committed || m.acked.contains(&offset);
    match entry {
        Entry::Counted { mark, .. } => m.mark = m.mark.max(mark),
        Entry::Delivered { attempts, .. } => {
            if !done {
                m.attempts
                    .insert(offset, attempts.min(MAX_RECORDED_DELIVERIES));
            }
        }
        Entry::Done { .. } => {
            m.attempts.remove(&offset);
            if !done {
                m.acked.insert(offset);
            }
            while m.acked.remove(&m.committed) {
                m.committed += 1;
            }
        }
    }
}

impl Journal {
    /// Opens the journal in `dir` for a group of `partitions` partitions and returns the
    /// progress it holds, and how many bytes of torn journal tail were cut.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        partitions: usize,
    ) -> Result<(Self, Vec<PartitionProgress>, u64), StorageError> {
        disk.create_dir_all(dir)
            .map_err(|e| StorageError::io("create", dir, e))?;
        let mut mirror = read_snapshot(&*disk, &dir.join("snapshot"), partitions)?;
        let log_path = dir.join("acks.log");
        let log = crate::storage::open_durable(&*disk, &log_path)
            .map_err(|e| StorageError::io("open", &log_path, e))?;
        let raw = crate::storage::read_stable(&*disk, &log_path)
            .map_err(|e| StorageError::io("read", &log_path, e))?;
        let mut good = 0usize;
        for raw_entry in raw.chunks_exact(ENTRY_BYTES) {
            let Some(entry) = Entry::decode(raw_entry) else {
                break;
            };
            apply(&mut mirror, entry);
            good += ENTRY_BYTES;
        }
        let cut = (raw.len() - good) as u64;
        if cut > 0 {
            log.set_len(good as u64)
                .map_err(|e| StorageError::io("truncate", &log_path, e))?;
            log.sync_all()
                .map_err(|e| StorageError::io("fsync", &log_path, e))?;
        }
        let progress = mirror.iter().map(Mirror::progress).collect();
        Ok((
            Self {
                disk,
                dir: dir.to_path_buf(),
                log_path,
                log,
                entries: (good / ENTRY_BYTES) as u64,
                synced_entries: (good / ENTRY_BYTES) as u64,
                failed: false,
                mirror,
            },
            progress,
            cut,
        ))
    }

    /// Writes entries (not yet durable: see [`Journal::sync`]).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Fenced);
        }
        let mut buf = Vec::with_capacity(entries.len() * ENTRY_BYTES);
        for e in entries {
            buf.extend_from_slice(&e.encode());
        }
        let end = self.entries * ENTRY_BYTES as u64;
        if let Err(e) = self.log.write_all_at(&buf, end) {
            // Cut whatever part of the batch made it, so that no entry of a failed write is
            // replayed after a restart (best effort: a cut that fails leaves entries that were
            // acknowledged by the consumer anyway, so replaying them loses nothing).
            let _ = self.log.set_len(end);
            return Err(StorageError::io("write", &self.log_path, e));
        }
        self.entries += entries.len() as u64;
        for e in entries {
            apply(&mut self.mirror, *e);
        }
        Ok(())
    }

    /// Makes every appended entry durable. After a failed sync the entries written since the
    /// last good one may never reach the disk even if a later sync succeeds, so they are cut
    /// and the journal takes no more: entries written after a hole would be lost with it, since
    /// recovery replays only up to the first bad entry.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Fenced);
        }
        match self.log.sync_data() {
            Ok(()) => {
                self.synced_entries = self.entries;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                let _ = self.log.set_len(self.synced_entries * ENTRY_BYTES as u64);
                self.entries = self.synced_entries;
                Err(StorageError::io("fsync", &self.log_path, e))
            }
        }
    }

    /// Takes in `progress` (merged with what the journal holds) and makes the result durable
    /// as a snapshot; returns the merged progress.
    pub fn merge(
        &mut self,
        progress: &[PartitionProgress],
    ) -> Result<Vec<PartitionProgress>, StorageError> {
        let mut merged: Vec<PartitionProgress> = self.mirror.iter().map(Mirror::progress).collect();
        PartitionProgress::merge_all(&mut merged, progress);
        merged.truncate(self.mirror.len());
        // Only what the journal knows is on disk may be merged into a snapshot of it.
        self.sync()?;
        self.mirror = merged.iter().map(Mirror::from).collect();
        self.compact()?;
        Ok(merged)
    }

    /// Whether the journal has grown enough to compact.
    pub fn should_compact(&self) -> bool {
        self.entries >= COMPACT_ENTRIES
    }

    /// Writes a snapshot of everything journaled, then empties the journal.
    pub fn compact(&mut self) -> Result<(), StorageError> {
        // After a failed sync the mirror holds entries that were cut: no snapshot of it.
        self.sync()?;
        let mut body = Vec::new();
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&u32::try_from(self.mirror.len()).unwrap_or(0).to_be_bytes());
        for m in &self.mirror {
            body.extend_from_slice(&m.committed.to_be_bytes());
            body.extend_from_slice(&u32::try_from(m.acked.len()).unwrap_or(0).to_be_bytes());
            for o in &m.acked {
                body.extend_from_slice(&o.to_be_bytes());
            }
            body.extend_from_slice(&u32::try_from(m.attempts.len()).unwrap_or(0).to_be_bytes());
            for (o, a) in &m.attempts {
                body.extend_from_slice(&o.to_be_bytes());
                body.extend_from_slice(&a.to_be_bytes());
            }
            body.extend_from_slice(&m.mark.to_be_bytes());
        }
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        write_atomic(&*self.disk, &self.dir.join("snapshot"), &body)?;
        self.log
            .set_len(0)
            .map_err(|e| StorageError::io("truncate", &self.log_path, e))?;
        self.log
            .sync_all()
            .map_err(|e| StorageError::io("fsync", &self.log_path, e))?;
        self.entries = 0;
        self.synced_entries = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsDisk;

    fn done(pairs: &[(u32, u64)]) -> Vec<Entry> {
        pairs
            .iter()
            .map(|&(partition, offset)| Entry::Done { partition, offset })
            .collect()
    }

    #[test]
    fn journal_replays_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, progress, cut) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        assert_eq!(cut, 0);
        assert_eq!(progress, vec![PartitionProgress::default(); 2]);
        j.append(&done(&[(0, 0), (0, 2), (1, 0)])).unwrap();
        j.sync().unwrap();
        drop(j);
        let (mut j, progress, _) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        assert_eq!(
            progress[0],
            PartitionProgress {
                committed: 1,
                acked: vec![2],
                attempts: vec![],
                mark: 0,
            }
        );
        assert_eq!(progress[1].committed, 1);
        j.compact().unwrap();
        j.append(&done(&[(0, 1)])).unwrap();
        j.sync().unwrap();
        drop(j);
        let (_, progress, _) = Journal::open(OsDisk::shared(), dir.path(), 3).unwrap();
        assert_eq!(progress[0].committed, 3);
        assert_eq!(progress.len(), 3);
    }

    #[test]
    fn a_torn_entry_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _, _) = Journal::open(OsDisk::shared(), dir.path(), 1).unwrap();
        j.append(&done(&[(0, 0), (0, 1)])).unwrap();
        drop(j);
        let path = dir.path().join("acks.log");
        let mut raw = std::fs::read(&path).unwrap();
        raw.truncate(ENTRY_BYTES + 5);
        std::fs::write(&path, raw).unwrap();
        let (_, progress, cut) = Journal::open(OsDisk::shared(), dir.path(), 1).unwrap();
        assert_eq!(cut, 5);
        assert_eq!(progress[0].committed, 1);
    }

    #[test]
    fn merged_progress_is_durable_and_covers_both_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _, _) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        j.append(&done(&[(0, 0), (0, 3)])).unwrap();
        j.append(&[Entry::Delivered {
            partition: 1,
            offset: 2,
            attempts: 2,
        }])
        .unwrap();
        let theirs = progress_of(
            &[
                Entry::Done {
                    partition: 0,
                    offset: 1,
                },
                Entry::Done {
                    partition: 0,
                    offset: 2,
                },
                Entry::Counted {
                    partition: 1,
                    mark: 9,
                },
                Entry::Done {
                    partition: 7,
                    offset: 0,
                },
            ],
            3,
        );
        assert_eq!(theirs.len(), 3, "a partition beyond the count is left out");
        let merged = j.merge(&theirs).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].committed, 4);
        assert_eq!(merged[1].attempts, vec![(2, 2)]);
        assert_eq!(merged[1].mark, 9);
        drop(j);
        let (_, progress, cut) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        assert_eq!(cut, 0);
        assert_eq!(progress, merged);
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _, _) = Journal::open(OsDisk::shared(), dir.path(), 1).unwrap();
        j.append(&done(&[(0, 0)])).unwrap();
        j.compact().unwrap();
        drop(j);
        let path = dir.path().join("snapshot");
        let mut raw = std::fs::read(&path).unwrap();
        raw[10] ^= 1;
        std::fs::write(&path, raw).unwrap();
        assert!(Journal::open(OsDisk::shared(), dir.path(), 1).is_err());
    }

    #[cfg(feature = "simulation")]
    #[test]
    fn a_failed_sync_cuts_the_unsynced_entries_and_the_journal_takes_no_more() {
        use crate::sim::disk::{Faults, SimDisk};
        use crate::storage::Disk;
        let disk = SimDisk::new(
            1,
            Faults {
                p_sync_eio: 1.0,
                ..Faults::default()
            },
        );
        disk.arm(false);
        let dir = Path::new("/g");
        disk.create_dir_all(dir).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let (mut j, _, _) = Journal::open(Arc::new(disk.clone()), dir, 1).unwrap();
        j.append(&done(&[(0, 0)])).unwrap();
        j.sync().unwrap();
        j.append(&done(&[(0, 1)])).unwrap();
        disk.arm(true);
        assert!(j.sync().is_err());
        disk.arm(false);
        assert!(matches!(
            j.append(&done(&[(0, 2)])),
            Err(StorageError::Fenced)
        ));
        assert!(matches!(j.sync(), Err(StorageError::Fenced)));
        assert!(j.compact().is_err(), "no snapshot of entries that were cut");
        drop(j);
        disk.crash();
        let (_, progress, cut) = Journal::open(Arc::new(disk), dir, 1).unwrap();
        assert_eq!(cut, 0, "nothing past the last good sync is read back");
        assert_eq!(progress[0].committed, 1);
    }

    #[test]
    fn delivery_counts_are_journaled_snapshotted_and_forgotten_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let delivered = |offset, attempts| Entry::Delivered {
            partition: 1,
            offset,
            attempts,
        };
        let (mut j, _, _) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        j.append(&[
            delivered(0, 1),
            delivered(1, 1),
            delivered(0, 2),
            Entry::Counted {
                partition: 1,
                mark: 4_000,
            },
        ])
        .unwrap();
        j.append(&done(&[(1, 1)])).unwrap();
        j.sync().unwrap();
        drop(j);
        let (mut j, progress, _) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        assert_eq!(progress[1].attempts, vec![(0, 2)]);
        assert_eq!(progress[1].acked, vec![1]);
        assert_eq!(progress[1].mark, 4_000);
        j.append(&[delivered(5, 40_000)]).unwrap();
        j.compact().unwrap();
        drop(j);
        let (_, progress, _) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        assert_eq!(
            progress[1].attempts,
            vec![(0, 2), (5, MAX_RECORDED_DELIVERIES)],
            "kept by the snapshot, capped"
        );
        assert_eq!(progress[1].mark, 4_000, "and the mark");
    }

    #[test]
    fn a_snapshot_of_the_first_format_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = MAGIC_V1.to_vec();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&7u64.to_be_bytes());
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&9u64.to_be_bytes());
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        std::fs::write(dir.path().join("snapshot"), body).unwrap();
        let (_, progress, _) = Journal::open(OsDisk::shared(), dir.path(), 1).unwrap();
        assert_eq!(progress[0].committed, 7);
        assert_eq!(progress[0].acked, vec![9]);
        assert!(progress[0].attempts.is_empty());
    }
}
