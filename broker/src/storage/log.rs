//! A partition's log: an ordered list of segments, the last one active.
//!
//! Invariants:
//! 1. Offsets are dense: segment `i+1` starts where segment `i` ends.
//! 2. Only the last segment is written; the others are sealed and only read or deleted.
//! 3. `append` writes into the page cache; bytes are durable only after the files returned by
//!    `take_unsynced` were synced. The caller decides when, and what readers may see before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;

use super::disk::{Disk, FileRef};
use super::error::StorageError;
use super::record::{self, StoredRecord};
use super::recovery::RecoveryReport;
use super::segment::Segment;
use crate::protocol::Record;

/// Sizes that shape a partition's log.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// Roll to a new segment when the active one reaches this size.
    pub segment_bytes: u64,
    /// Largest record accepted or read back.
    pub max_record_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One partition's log.
#[derive(Debug)]
pub struct PartitionLog {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    unsynced: Vec<Unsynced>,
    scratch: Batch,
}

/// A segment file written since its last sync.
#[derive(Debug, Clone)]
pub struct Unsynced {
    /// The file, to sync outside the log's lock.
    pub file: FileRef,
    /// Its path, for errors.
    pub path: PathBuf,
    base: u64,
    /// Its size when taken: what a successful sync makes durable.
    size: u64,
}

/// Records encoded for a log, numbered and stamped, not yet written.
#[derive(Debug, Default)]
pub struct Batch {
    buf: BytesMut,
    /// Each record's start within `buf`.
    rel: Vec<u32>,
    /// The last record's timestamp.
    timestamp_ms: u64,
}

impl Batch {
    /// Adds a record, which gets `offset` (the next after the batch's last).
    pub fn push(&mut self, offset: u64, timestamp_ms: u64, record: &Record) {
        self.rel
            .push(u32::try_from(self.buf.len()).unwrap_or(u32::MAX));
        record::encode(offset, timestamp_ms, record, &mut self.buf);
        self.timestamp_ms = timestamp_ms;
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.rel.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.rel.is_empty()
    }

    /// Encoded bytes.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.rel.clear();
    }
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering its last segment. The caller makes a new
    /// `dir` durable (see `create_dir_durable`).
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        config: LogConfig,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        disk.create_dir_all(dir)
            .map_err(|e| StorageError::io("create", dir, e))?;
        let mut bases = Vec::new();
        let names = disk
            .list(dir)
            .map_err(|e| StorageError::io("list", dir, e))?;
        for name in &names {
            if let Some(stem) = name.strip_suffix(".log")
                && let Ok(base) = stem.parse::<u64>()
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        // Names created or removed by a process that died (or by an open that failed) before it
        // synced them are made durable as they are now, before anything is built upon them.
        disk.sync_dir(dir)
            .map_err(|e| StorageError::io("fsync dir", dir, e))?;
        let mut report = RecoveryReport::default();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, base) in bases.iter().enumerate() {
            let expected = bases.get(i + 1).map(|next| next.saturating_sub(*base));
            let (mut seg, mut cut, reason, rebuilt) =
                Segment::open(&*disk, dir, *base, expected, config.max_record_bytes)?;
            let short = expected.is_some_and(|n| seg.end() < base + n);
            if let Some(n) = expected
                && seg.end() > base + n
            {
                // A write that failed and was cut came back in a crash (the cut never reached
                // the disk): its records were refused, and the next segment starts where they
                // would have. Cut them again.
                cut += seg.keep_records(usize::try_from(n).unwrap_or(usize::MAX));
                if seg.is_poisoned() {
                    return Err(StorageError::Corrupt {
                        offset: base + n,
                        path: seg.path().to_path_buf(),
                        reason: "records past the next segment's base could not be cut".into(),
                    });
                }
                report.reason = Some("a failed write came back in a crash");
            }
            report.truncated_bytes += cut;
            if reason.is_some() {
                report.reason = reason;
            }
            if rebuilt && expected.is_some() {
                report.rebuilt_indexes += 1;
            }
            segments.push(seg);
            if short {
                // A segment is synced before anything after it is acknowledged, so records
                // missing from a sealed one were never acknowledged, nor was anything after
                // them: the crash came before their sync. The log ends here.
                report.reason = Some("a sealed segment lost its unsynced tail in a crash");
                for later in bases.get(i + 1..).unwrap_or(&[]) {
                    report.truncated_bytes += Segment::remove_files(&*disk, dir, *later)?;
                }
                break;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(&*disk, dir, 0)?);
        }
        Ok((
            Self {
                disk,
                dir: dir.to_path_buf(),
                config,
                segments,
                unsynced: Vec::new(),
                scratch: Batch::default(),
            },
            report,
        ))
    }

    /// Offset of the oldest retained record.
    pub fn start_offset(&self) -> u64 {
        self.segments.first().map_or(0, Segment::base)
    }

    /// Offset the next record will get.
    pub fn end_offset(&self) -> u64 {
        self.segments.last().map_or(0, Segment::end)
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&mut self) -> Result<&mut Segment, StorageError> {
        if self.segments.is_empty() {
            self.segments
                .push(Segment::create(&*self.disk, &self.dir, 0)?);
        }
        let last = self.segments.len() - 1;
        self.segments.get_mut(last).ok_or(StorageError::Closed)
    }

    /// Appends `records` with one timestamp; returns the first offset given.
    pub fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Record>,
        timestamp_ms: u64,
    ) -> Result<u64, StorageError> {
        let first = self.end_offset();
        let mut batch = std::mem::take(&mut self.scratch);
        batch.clear();
        for (offset, r) in (first..).zip(records) {
            let size = record::encoded_size(r);
            if size > self.config.max_record_bytes {
                self.scratch = batch;
                return Err(StorageError::RecordTooLarge {
                    bytes: size,
                    max: self.config.max_record_bytes,
                });
            }
            batch.push(offset, timestamp_ms, r);
        }
        let written = self.write(&batch);
        self.scratch = batch;
        written.map(|()| first)
    }

    /// Writes `batch`, whose records were numbered from `end_offset()` on, rolling to a new
    /// segment first when the active one would grow past its size.
    pub fn write(&mut self, batch: &Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let first = self.end_offset();
        let needs_roll = {
            let active = self.active()?;
            active.size() > 0 && active.size() + batch.buf.len() as u64 > self.config.segment_bytes
        };
        if needs_roll {
            let old = self.active()?;
            old.seal()?;
            self.mark_unsynced(self.segments.len() - 1);
            match Segment::create(&*self.disk, &self.dir, first) {
                Ok(seg) => self.segments.push(seg),
                Err(e) => {
                    // Files of a half-made segment would make recovery take the active segment
                    // for a sealed one and ignore what is appended to it from now on.
                    if Segment::remove_files(&*self.disk, &self.dir, first).is_err() {
                        self.active()?.poison();
                    }
                    return Err(e);
                }
            }
        }
        let chunk = super::segment::PREALLOCATE_BYTES.min(self.config.segment_bytes);
        let seg = self.active()?;
        seg.append(&batch.buf, &batch.rel, batch.timestamp_ms, chunk)?;
        self.mark_unsynced(self.segments.len() - 1);
        Ok(())
    }

    fn mark_unsynced(&mut self, index: usize) {
        let Some(seg) = self.segments.get(index) else {
            return;
        };
        let base = seg.base();
        if !self.unsynced.iter().any(|u| u.base == base) {
            self.unsynced.push(Unsynced {
                file: seg.file(),
                path: seg.path().to_path_buf(),
                base,
                size: 0,
            });
        }
    }

    fn segment_mut(&mut self, base: u64) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.base() == base)
    }

    /// Whether a failed write could not be undone (the partition must stop writing).
    pub fn is_poisoned(&self) -> bool {
        self.segments.last().is_some_and(Segment::is_poisoned)
    }

    /// The files written since the last call, to be synced by the caller, who then reports
    /// the outcome to [`PartitionLog::synced`] or [`PartitionLog::sync_failed`].
    pub fn take_unsynced(&mut self) -> Vec<Unsynced> {
        let mut taken = std::mem::take(&mut self.unsynced);
        for u in &mut taken {
            u.size = self
                .segments
                .iter()
                .find(|s| s.base() == u.base)
                .map_or(0, Segment::size);
        }
        taken
    }

    /// The files taken were synced.
    pub fn synced(&mut self, taken: &[Unsynced]) {
        for u in taken {
            if let Some(seg) = self.segment_mut(u.base) {
                seg.mark_durable(u.size);
            }
        }
    }

    /// A sync of the files taken failed: what was written to them since their last sync may
    /// never reach the disk, so it is cut (see [`Segment::cut_to_durable`]). The caller stops
    /// writing to this log.
    pub fn sync_failed(&mut self, taken: &[Unsynced]) {
        for u in taken {
            if let Some(seg) = self.segment_mut(u.base) {
                seg.cut_to_durable();
            }
        }
    }

    /// Cuts the log back so that it ends at `end`, durably: a replica's divergent tail, which
    /// the leader's records replace. Segments starting at or past `end` are removed, last
    /// first, so a crash half way leaves a prefix; the segment holding `end` is cut there and
    /// becomes the active one. Returns the records cut. A cut below the log's start empties it
    /// and restarts it at `end`. On an error the log may be cut part of the way (always to a
    /// prefix); if its last segment could not be cut it is poisoned and takes no more writes.
    pub fn truncate_to(&mut self, end: u64) -> Result<u64, StorageError> {
        let old_end = self.end_offset();
        if end >= old_end {
            return Ok(0);
        }
        // A segment starting past `end` goes; one starting at it is kept (emptied) if it is
        // the only one.
        while let Some(last) = self.segments.last()
            && last.base() >= end
            && (self.segments.len() > 1 || last.base() > end)
        {
            let Some(seg) = self.segments.pop() else {
                break;
            };
            Segment::remove_files(&*self.disk, &self.dir, seg.base())?;
        }
        if self.segments.is_empty() {
            // Everything went: the log starts again at `end`.
            self.segments
                .push(Segment::create(&*self.disk, &self.dir, end)?);
        } else if let Some(last) = self.segments.last_mut() {
            let keep = usize::try_from(end.saturating_sub(last.base())).unwrap_or(usize::MAX);
            last.keep_records(keep);
            if last.is_poisoned() {
                return Err(StorageError::Corrupt {
                    offset: end,
                    path: last.path().to_path_buf(),
                    reason: "a divergent tail could not be cut".into(),
                });
            }
        }
        let bases: Vec<u64> = self.segments.iter().map(Segment::base).collect();
        self.unsynced.retain(|u| bases.contains(&u.base));
        Ok(old_end - self.end_offset())
    }

    /// Empties the log and starts it again at `start`, durably: segments are removed last
    /// first (a crash half way leaves a prefix), then one is created at `start`. Returns the
    /// records removed. On an error the log may have lost part of its records (always from the
    /// end) and takes no more writes.
    pub fn restart_at(&mut self, start: u64) -> Result<u64, StorageError> {
        let held = self.end_offset() - self.start_offset();
        if held == 0 && self.start_offset() == start && self.segments.len() == 1 {
            return Ok(0);
        }
        while let Some(last) = self.segments.last() {
            Segment::remove_files(&*self.disk, &self.dir, last.base())?;
            self.segments.pop();
        }
        self.unsynced.clear();
        self.segments
            .push(Segment::create(&*self.disk, &self.dir, start)?);
        Ok(held)
    }

    /// Reads up to `max_records` records from `from`, below `upto`, within about `max_bytes`.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        upto: u64,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let mut out: Vec<StoredRecord> = Vec::new();
        let mut next = from.max(self.start_offset());
        let mut budget = max_bytes;
        while out.len() < max_records && next < upto.min(self.end_offset()) {
            let idx = self.segments.partition_point(|s| s.base() <= next);
            let Some(seg) = idx.checked_sub(1).and_then(|i| self.segments.get(i)) else {
                break;
            };
            let want = usize::try_from(upto.min(seg.end()) - next)
                .unwrap_or(usize::MAX)
                .min(max_records - out.len());
            // A record failing its checksum is read once more: the read may have gone wrong.
            let got = match seg
                .read_from(next, want, budget, self.config.max_record_bytes)
                .or_else(|_| seg.read_from(next, want, budget, self.config.max_record_bytes))
            {
                Ok(got) => got,
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            };
            let Some(last) = got.last() else { break };
            next = last.offset + 1;
            let used: usize = got.iter().map(|r| record::encoded_size(&r.record)).sum();
            out.extend(got);
            budget = budget.saturating_sub(used);
            if budget == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes sealed segments from the front while `may_delete(segment_end, log_bytes,
    /// segment_last_timestamp_ms)` says so (`log_bytes`: the log's size before this deletion). The active segment is never deleted. Returns how many.
    pub fn delete_front(
        &mut self,
        mut may_delete: impl FnMut(u64, u64, u64) -> bool,
    ) -> Result<usize, StorageError> {
        let mut total = self.size_bytes();
        let mut removed = 0;
        while self.segments.len() > 1 {
            let Some(first) = self.segments.first() else {
                break;
            };
            let after = total - first.size();
            if !may_delete(first.end(), total, first.last_timestamp_ms()) {
                break;
            }
            let seg = self.segments.remove(0);
            total = after;
            seg.delete(&*self.disk)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Calls `f` on every record whose segment holds records at or after `since_ms`, oldest
    /// first: used to rebuild the dedup window after a restart. Returns how many records could
    /// not be read and were skipped (a hole that a power cut left under `--fsync never`).
    pub fn scan_recent(&self, since_ms: u64, mut f: impl FnMut(&StoredRecord)) -> u64 {
        let first = self
            .segments
            .iter()
            .position(|s| s.last_timestamp_ms() >= since_ms)
            .unwrap_or(self.segments.len());
        let Some(from) = self.segments.get(first).map(Segment::base) else {
            return 0;
        };
        let end = self.end_offset();
        let mut next = from;
        let mut unreadable = 0;
        while next < end {
            let Ok(batch) = self.read(next, 4096, 8 * 1024 * 1024, end) else {
                unreadable += 1;
                next += 1;
                continue;
            };
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            for r in &batch {
                if r.timestamp_ms >= since_ms {
                    f(r);
                }
            }
        }
        unreadable
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
