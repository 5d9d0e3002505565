//! Durable consumer-group progress: a snapshot plus an acknowledgement journal.
//!
//! Files in `groups/<topic>/<group>/`:
//!
//! `group.json` — the group's configuration, written once (temp file, fsync, rename).
//!
//! `snapshot` — progress at some point, replaced atomically (temp file, fsync, rename, fsync dir):
//!
//! | bytes | field                                             |
//! |-------|---------------------------------------------------|
//! | 8     | magic `TRGSNAP1`                                  |
//! | 4     | partition count `P`                               |
//! | per partition: 8 committed, 4 count `N`, `N` × 8 acked offsets |
//! | 4     | CRC32C of everything before it                     |
//!
//! `acks.log` — one 16-byte entry per acknowledged (or dead-lettered) record since the snapshot:
//! CRC32C (`u32`, of the next 12 bytes), partition (`u32`), offset (`u64`). Recovery replays
//! entries until the first torn or bad one and cuts the file there (an entry is written before
//! its acknowledgement is answered, so a cut entry was never acknowledged to anyone).
//!
//! The journal keeps its own mirror of the progress it has written, so compaction (snapshot,
//! then empty the log) needs nothing from the caller and cannot race with new entries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::state::{GroupConfig, PartitionProgress};
use crate::storage::{Disk, FileRef, StorageError};

const MAGIC: &[u8; 8] = b"TRGSNAP1";
const ENTRY_BYTES: usize = 16;
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
    mirror: Vec<(u64, BTreeSet<u64>)>,
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
) -> Result<Vec<(u64, BTreeSet<u64>)>, StorageError> {
    let empty = vec![(0, BTreeSet::new()); partitions];
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
    let body = bytes::Bytes::copy_from_slice(body);
    let mut r = crate::codec::Reader::new(&body);
    let magic = [
        r.u32("magic").map_err(|e| corrupt(path, &e.to_string()))?,
        r.u32("magic").map_err(|e| corrupt(path, &e.to_string()))?,
    ];
    if [magic[0].to_be_bytes(), magic[1].to_be_bytes()].concat() != MAGIC {
        return Err(corrupt(path, "not a group snapshot"));
    }
    let n = r
        .count("partitions", 12)
        .map_err(|e| corrupt(path, &e.to_string()))?;
    let mut out = Vec::with_capacity(partitions.max(n));
    for _ in 0..n {
        let committed = r
            .u64("committed")
            .map_err(|e| corrupt(path, &e.to_string()))?;
        let k = r
            .count("acked", 8)
            .map_err(|e| corrupt(path, &e.to_string()))?;
        let mut acked = BTreeSet::new();
        for _ in 0..k {
            acked.insert(r.u64("acked").map_err(|e| corrupt(path, &e.to_string()))?);
        }
        out.push((committed, acked));
    }
    out.resize(partitions.max(n), (0, BTreeSet::new()));
    Ok(out)
}

fn apply(mirror: &mut [(u64, BTreeSet<u64>)], partition: u32, offset: u64) {
    let Some((committed, acked)) = usize::try_from(partition)
        .ok()
        .and_then(|i| mirror.get_mut(i))
    else {
        return;
    };
    if offset >= *committed {
        acked.insert(offset);
    }
    while acked.remove(committed) {
        *committed += 1;
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
        for entry in raw.chunks_exact(ENTRY_BYTES) {
            let crc = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            if crc32c::crc32c(&entry[4..]) != crc {
                break;
            }
            let partition = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
            let mut off = [0u8; 8];
            off.copy_from_slice(&entry[8..16]);
            apply(&mut mirror, partition, u64::from_be_bytes(off));
            good += ENTRY_BYTES;
        }
        let cut = (raw.len() - good) as u64;
        if cut > 0 {
            log.set_len(good as u64)
                .map_err(|e| StorageError::io("truncate", &log_path, e))?;
            log.sync_all()
                .map_err(|e| StorageError::io("fsync", &log_path, e))?;
        }
        let progress = mirror
            .iter()
            .map(|(c, a)| PartitionProgress {
                committed: *c,
                acked: a.iter().copied().collect(),
            })
            .collect();
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

    /// Writes entries for done records (not yet durable: see [`Journal::sync`]).
    pub fn append(&mut self, done: &[(u32, u64)]) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Fenced);
        }
        let mut buf = Vec::with_capacity(done.len() * ENTRY_BYTES);
        for (p, o) in done {
            let mut e = [0u8; ENTRY_BYTES];
            e[4..8].copy_from_slice(&p.to_be_bytes());
            e[8..16].copy_from_slice(&o.to_be_bytes());
            let crc = crc32c::crc32c(&e[4..]);
            e[..4].copy_from_slice(&crc.to_be_bytes());
            buf.extend_from_slice(&e);
        }
        let end = self.entries * ENTRY_BYTES as u64;
        if let Err(e) = self.log.write_all_at(&buf, end) {
            // Cut whatever part of the batch made it, so that no entry of a failed write is
            // replayed after a restart (best effort: a cut that fails leaves entries that were
            // acknowledged by the consumer anyway, so replaying them loses nothing).
            let _ = self.log.set_len(end);
            return Err(StorageError::io("write", &self.log_path, e));
        }
        self.entries += done.len() as u64;
        for (p, o) in done {
            apply(&mut self.mirror, *p, *o);
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
        for (committed, acked) in &self.mirror {
            body.extend_from_slice(&committed.to_be_bytes());
            body.extend_from_slice(&u32::try_from(acked.len()).unwrap_or(0).to_be_bytes());
            for o in acked {
                body.extend_from_slice(&o.to_be_bytes());
            }
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

    #[test]
    fn journal_replays_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, progress, cut) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        assert_eq!(cut, 0);
        assert_eq!(progress, vec![PartitionProgress::default(); 2]);
        j.append(&[(0, 0), (0, 2), (1, 0)]).unwrap();
        j.sync().unwrap();
        drop(j);
        let (mut j, progress, _) = Journal::open(OsDisk::shared(), dir.path(), 2).unwrap();
        assert_eq!(
            progress[0],
            PartitionProgress {
                committed: 1,
                acked: vec![2]
            }
        );
        assert_eq!(progress[1].committed, 1);
        j.compact().unwrap();
        j.append(&[(0, 1)]).unwrap();
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
        j.append(&[(0, 0), (0, 1)]).unwrap();
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
    fn a_corrupt_snapshot_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _, _) = Journal::open(OsDisk::shared(), dir.path(), 1).unwrap();
        j.append(&[(0, 0)]).unwrap();
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
        j.append(&[(0, 0)]).unwrap();
        j.sync().unwrap();
        j.append(&[(0, 1)]).unwrap();
        disk.arm(true);
        assert!(j.sync().is_err());
        disk.arm(false);
        assert!(matches!(j.append(&[(0, 2)]), Err(StorageError::Fenced)));
        assert!(matches!(j.sync(), Err(StorageError::Fenced)));
        assert!(j.compact().is_err(), "no snapshot of entries that were cut");
        drop(j);
        disk.crash();
        let (_, progress, cut) = Journal::open(Arc::new(disk), dir, 1).unwrap();
        assert_eq!(cut, 0, "nothing past the last good sync is read back");
        assert_eq!(progress[0].committed, 1);
    }
}
