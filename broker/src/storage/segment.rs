//! One segment: a `.log` file of records and its dense `.index` of record positions.
//!
//! Appends go through `pwrite` at the tracked end of the file; reads through `pread`, so a
//! reader never disturbs the writer and needs only `&self`. Durability (`fdatasync`) is the
//! caller's decision: see `PartitionLog::take_unsynced`.
//!
//! The index lives in memory while the segment is active and is written once, when it is
//! sealed: recovery rebuilds the active segment's index from the log anyway, and trusts a sealed
//! segment's index only when it is whole (a CRC32C closes it), consistent with its log and its
//! last record reads back, so an index file never needs a write per append nor a sync.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::disk::{Disk, FileRef};
use super::error::StorageError;
use super::record::{Decoded, StoredRecord, decode};
use super::recovery::{self, Scan};

/// One segment of a partition's log.
#[derive(Debug)]
pub struct Segment {
    base: u64,
    log_path: PathBuf,
    index_path: PathBuf,
    log: FileRef,
    index: FileRef,
    positions: Vec<u32>,
    /// Bytes of records.
    size: u64,
    /// Bytes written in the file: records, then zeros written ahead (pre-allocation).
    allocated: u64,
    last_timestamp_ms: u64,
    /// Bytes known to be on disk: synced, or read back by recovery.
    durable: u64,
    poisoned: bool,
}

/// Zeros are written ahead of the records in chunks of up to this size. Syncing a file whose
/// size does not change is about twice as fast on this kind of disk (no metadata to flush), so
/// most syncs land in already-written space; see docs/PERFORMANCE.md, "The machine underneath".
pub const PREALLOCATE_BYTES: u64 = 4 * 1024 * 1024;
/// The first chunk. Chunks then double with the segment (each as large as the records so far)
/// up to `PREALLOCATE_BYTES`: a new or quiet partition does not write (and sync) megabytes of
/// zeros for a few records, which stalled the first produces to a new topic by tens of
/// milliseconds when its partitions all did at once.
const PREALLOCATE_MIN_BYTES: u64 = 64 * 1024;

/// Further reads of a segment whose recovery scan found a bad record, before its tail is cut.
const RECOVERY_READS: usize = 2;

/// The file name of the segment starting at `base`.
pub fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}

fn index_name(base: u64) -> String {
    format!("{base:020}.index")
}

fn open_rw(disk: &dyn Disk, path: &Path) -> Result<FileRef, StorageError> {
    disk.open(path)
        .map_err(|e| StorageError::io("open", path, e))
}

impl Segment {
    /// Creates an empty segment starting at `base`. Both names are synced into `dir` before this
    /// returns: records synced into the segment must not be lost with its name.
    pub fn create(disk: &dyn Disk, dir: &Path, base: u64) -> Result<Self, StorageError> {
        let log_path = dir.join(log_name(base));
        let index_path = dir.join(index_name(base));
        let log = open_rw(disk, &log_path)?;
        log.set_len(0)
            .map_err(|e| StorageError::io("truncate", &log_path, e))?;
        let index = open_rw(disk, &index_path)?;
        index
            .set_len(0)
            .map_err(|e| StorageError::io("truncate", &index_path, e))?;
        disk.sync_dir(dir)
            .map_err(|e| StorageError::io("fsync dir", dir, e))?;
        Ok(Self {
            base,
            log_path,
            index_path,
            log,
            index,
            positions: Vec::new(),
            size: 0,
            allocated: 0,
            last_timestamp_ms: 0,
            durable: 0,
            poisoned: false,
        })
    }

    /// Opens an existing segment.
    ///
    /// `expected_records` is known for a sealed segment (the next segment's base minus this
    /// one's); its index is trusted when it has exactly that many increasing entries. The last
    /// segment (`None`) is always scanned record by record, its torn or corrupt tail cut.
    /// Returns the segment, the bytes cut and why, and whether the index was rebuilt.
    pub fn open(
        disk: &dyn Disk,
        dir: &Path,
        base: u64,
        expected_records: Option<u64>,
        max_record_bytes: usize,
    ) -> Result<(Self, u64, Option<&'static str>, bool), StorageError> {
        let log_path = dir.join(log_name(base));
        let index_path = dir.join(index_name(base));
        let log = open_rw(disk, &log_path)?;
        let index = open_rw(disk, &index_path)?;
        let size = log
            .size()
            .map_err(|e| StorageError::io("stat", &log_path, e))?;
        let mut seg = Self {
            base,
            log_path,
            index_path,
            log,
            index,
            positions: Vec::new(),
            size,
            allocated: size,
            last_timestamp_ms: 0,
            durable: size,
            poisoned: false,
        };
        if let Some(n) = expected_records
            && let Some(positions) = seg.load_index(n)?
        {
            seg.positions = positions;
            // The index is written when the segment is sealed and may have reached the disk
            // when the records it points to did not: it is trusted only if its last record
            // reads back whole (read twice: once may be a bad read).
            if let Some(ts) = seg
                .read_last_timestamp(max_record_bytes)
                .or_else(|| seg.read_last_timestamp(max_record_bytes))
            {
                seg.last_timestamp_ms = ts;
                return Ok((seg, 0, None, false));
            }
            seg.positions.clear();
        }
        let mut bytes = seg.read_all()?;
        let mut scan = recovery::scan(&bytes, base, max_record_bytes);
        // A record that fails its checksum may be a read that went wrong, not bytes on disk:
        // read again before cutting anything (a bad read never makes bad bytes look good, so
        // the longest good prefix of a few reads is the one on disk).
        for _ in 0..RECOVERY_READS {
            if scan.zero_tail || scan.valid_len >= bytes.len() as u64 {
                break;
            }
            let again = seg.read_all()?;
            let rescan = recovery::scan(&again, base, max_record_bytes);
            if rescan.valid_len > scan.valid_len || (rescan.zero_tail && !scan.zero_tail) {
                bytes = again;
                scan = rescan;
            }
        }
        let Scan {
            positions,
            valid_len,
            cut_reason,
            last_timestamp_ms,
            zero_tail,
        } = scan;
        // Bytes of torn or corrupt data cut: up to the last non-zero byte, since the zeros
        // written ahead after it were never data.
        let cut = if zero_tail || valid_len == bytes.len() as u64 {
            // Nothing but whole records (or zeros written ahead after them): nothing to cut.
            0
        } else {
            let data_end = bytes
                .iter()
                .rposition(|b| *b != 0)
                .map_or(0, |i| i as u64 + 1);
            data_end.saturating_sub(valid_len).max(1)
        };
        seg.size = valid_len;
        seg.durable = valid_len;
        if cut > 0 {
            seg.log
                .set_len(valid_len)
                .map_err(|e| StorageError::io("truncate", &seg.log_path, e))?;
            seg.log
                .sync_all()
                .map_err(|e| StorageError::io("fsync", &seg.log_path, e))?;
            seg.allocated = valid_len;
        }
        seg.positions = positions;
        seg.last_timestamp_ms = last_timestamp_ms.unwrap_or(0);
        seg.rewrite_index()?;
        Ok((seg, cut, cut_reason.filter(|_| cut > 0), true))
    }

    /// The index file's positions if it holds exactly `expected` of them under a good checksum
    /// and they make sense for the log; `None` means rebuild it from the log (an index of the
    /// first format, without its checksum, is rebuilt once).
    fn load_index(&self, expected: u64) -> Result<Option<Vec<u32>>, StorageError> {
        let len = self
            .index
            .size()
            .map_err(|e| StorageError::io("stat", &self.index_path, e))?;
        if len != expected.saturating_mul(4).saturating_add(4) {
            return Ok(None);
        }
        let mut raw = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.index
            .read_exact_at(&mut raw, 0)
            .map_err(|e| StorageError::io("read", &self.index_path, e))?;
        let (body, crc) = raw.split_at(raw.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Ok(None);
        }
        let positions: Vec<u32> = body
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let increasing = positions.windows(2).all(|w| w[0] < w[1]);
        let in_file = positions.last().is_none_or(|p| u64::from(*p) < self.size);
        let starts_at_zero = positions.first().is_none_or(|p| *p == 0);
        Ok((increasing && in_file && starts_at_zero).then_some(positions))
    }

    /// The timestamp of the last record per the index; `None` if it does not read back whole.
    fn read_last_timestamp(&self, max_record_bytes: usize) -> Option<u64> {
        let Some(last) = self.positions.len().checked_sub(1) else {
            return Some(0);
        };
        let offset = self.base + last as u64;
        match self.read_from(offset, 1, usize::MAX, max_record_bytes) {
            Ok(v) => v
                .first()
                .filter(|r| r.offset == offset)
                .map(|r| r.timestamp_ms),
            Err(_) => None,
        }
    }

    fn read_all(&self) -> Result<Bytes, StorageError> {
        let mut buf = vec![0u8; usize::try_from(self.size).unwrap_or(0)];
        self.log
            .read_exact_at(&mut buf, 0)
            .map_err(|e| StorageError::io("read", &self.log_path, e))?;
        Ok(Bytes::from(buf))
    }

    fn rewrite_index(&mut self) -> Result<(), StorageError> {
        let mut raw = Vec::with_capacity(self.positions.len() * 4 + 4);
        for p in &self.positions {
            raw.extend_from_slice(&p.to_be_bytes());
        }
        let crc = crc32c::crc32c(&raw);
        raw.extend_from_slice(&crc.to_be_bytes());
        self.index
            .set_len(0)
            .map_err(|e| StorageError::io("truncate", &self.index_path, e))?;
        self.index
            .write_all_at(&raw, 0)
            .map_err(|e| StorageError::io("write", &self.index_path, e))
    }

    /// Offset of the first record.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Offset one past the last record.
    pub fn end(&self) -> u64 {
        self.base + self.positions.len() as u64
    }

    /// Bytes in the log file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Timestamp of the last record (0 when empty).
    pub fn last_timestamp_ms(&self) -> u64 {
        self.last_timestamp_ms
    }

    /// The log file, for a sync outside any lock.
    pub fn file(&self) -> FileRef {
        FileRef::clone(&self.log)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.log_path
    }

    /// Appends encoded records; `rel_positions` are each record's start within `buf`. Zeros
    /// are written ahead in steps of up to `preallocate_chunk` (0: none). The positions go to the
    /// in-memory index only: the index file is written when the segment is sealed.
    pub fn append(
        &mut self,
        buf: &[u8],
        rel_positions: &[u32],
        last_timestamp_ms: u64,
        preallocate_chunk: u64,
    ) -> Result<(), StorageError> {
        let start = self.size;
        let start32 = u32::try_from(start).map_err(|_| StorageError::RecordTooLarge {
            bytes: buf.len(),
            max: u32::MAX as usize,
        })?;
        let written = self
            .preallocate(start + buf.len() as u64, preallocate_chunk)
            .and_then(|()| {
                self.log
                    .write_all_at(buf, start)
                    .map_err(|e| StorageError::io("write", &self.log_path, e))
            });
        if let Err(e) = written {
            // A failed write (a full disk, say) may have left whole records past the end. Cut
            // them so that a later, shorter write cannot leave one behind that recovery would
            // take for real; then the segment is as it was and writing may go on.
            self.undo_to(start);
            return Err(e);
        }
        self.positions
            .extend(rel_positions.iter().map(|rel| start32.saturating_add(*rel)));
        self.size = start + buf.len() as u64;
        self.last_timestamp_ms = last_timestamp_ms;
        Ok(())
    }

    /// Cuts the log back to `size` bytes, durably: the bytes cut may have been records (of a
    /// write that failed half way), which must not come back after a power cut. If that fails
    /// the segment is poisoned and its partition must stop writing.
    fn undo_to(&mut self, size: u64) {
        match self.log.set_len(size).and_then(|()| self.log.sync_all()) {
            Ok(()) => self.allocated = size,
            Err(e) => {
                tracing::error!(path = %self.log_path.display(), error = %e, "cannot cut a failed write");
                self.poisoned = true;
            }
        }
    }

    /// Marks the segment as unfit for more writes (see [`Segment::is_poisoned`]).
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Notes that the first `size` bytes were synced.
    pub fn mark_durable(&mut self, size: u64) {
        self.durable = self.durable.max(size.min(self.size));
    }

    /// After a failed sync: cuts the records that were written but not synced, in memory and in
    /// the file. The failed sync may have dropped them from the page cache's dirty set, so
    /// they may never reach the disk; kept, they would be read back (by this process, or by
    /// the next one if the machine did not restart) and built upon, and records acknowledged
    /// after them would be lost with them at the next power cut (PostgreSQL's "fsyncgate").
    pub fn cut_to_durable(&mut self) {
        if self.size <= self.durable {
            return;
        }
        let keep = self
            .positions
            .partition_point(|p| u64::from(*p) < self.durable);
        self.positions.truncate(keep);
        self.size = self.durable;
        self.undo_to(self.durable);
    }

    /// Keeps only the first `records` records (recovery: what lies past the next segment's base
    /// was a write that failed and came back); returns the bytes cut.
    pub fn keep_records(&mut self, records: usize) -> u64 {
        let Some(&end) = self.positions.get(records) else {
            return 0;
        };
        let cut = self.size - u64::from(end);
        self.positions.truncate(records);
        self.size = u64::from(end);
        self.durable = self.durable.min(self.size);
        self.undo_to(self.size);
        cut
    }

    /// Whether a failed write could not be undone: what the file holds past the last record
    /// is unknown, so nothing more may be appended.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Writes zeros ahead so that the file covers at least `needed` bytes, in chunks as large
    /// as the records so far, between `PREALLOCATE_MIN_BYTES` and `max_chunk`.
    fn preallocate(&mut self, needed: u64, max_chunk: u64) -> Result<(), StorageError> {
        if needed <= self.allocated || max_chunk == 0 {
            return Ok(());
        }
        let chunk = self
            .size
            .clamp(PREALLOCATE_MIN_BYTES, max_chunk.max(PREALLOCATE_MIN_BYTES));
        let target = needed.div_ceil(chunk) * chunk;
        let zeros = vec![0u8; 1024 * 1024];
        let mut at = self.allocated.max(self.size);
        while at < target {
            let n = usize::try_from((target - at).min(zeros.len() as u64)).unwrap_or(zeros.len());
            self.log
                .write_all_at(zeros.get(..n).unwrap_or(&zeros), at)
                .map_err(|e| StorageError::io("preallocate", &self.log_path, e))?;
            at += n as u64;
        }
        self.allocated = target;
        Ok(())
    }

    /// Writes the index file and cuts the zeros written ahead: called when the segment is
    /// sealed, so a sealed segment has its whole index and ends exactly at its last record.
    pub fn seal(&mut self) -> Result<(), StorageError> {
        self.rewrite_index()?;
        if self.allocated > self.size {
            self.log
                .set_len(self.size)
                .map_err(|e| StorageError::io("truncate", &self.log_path, e))?;
            self.allocated = self.size;
        }
        Ok(())
    }

    /// Reads up to `max_records` records from `from` (which must be in this segment), stopping
    /// early past `max_bytes` (at least one record is returned if any exists).
    pub fn read_from(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        max_record_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let Some(first) = from
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return Ok(Vec::new());
        };
        let Some(&start) = self.positions.get(first) else {
            return Ok(Vec::new());
        };
        let mut last = first
            .saturating_add(max_records.max(1))
            .min(self.positions.len());
        // Bound the read by bytes: stop at the first record ending beyond max_bytes.
        let end_of = |i: usize| -> u64 {
            self.positions
                .get(i + 1)
                .map_or(self.size, |p| u64::from(*p))
        };
        while last > first + 1 && end_of(last - 1) - u64::from(start) > max_bytes as u64 {
            last -= 1;
        }
        let end = end_of(last - 1);
        let len = usize::try_from(end - u64::from(start)).unwrap_or(0);
        let mut raw = BytesMut::zeroed(len);
        self.log
            .read_exact_at(&mut raw, u64::from(start))
            .map_err(|e| StorageError::io("read", &self.log_path, e))?;
        let raw = raw.freeze();
        let mut out = Vec::with_capacity(last - first);
        let mut pos = 0usize;
        for i in first..last {
            let offset = self.base + i as u64;
            match decode(&raw.slice(pos..), offset, max_record_bytes) {
                Decoded::Record(rec, used) => {
                    pos += used;
                    out.push(rec);
                }
                Decoded::Torn | Decoded::Corrupt(_) if !out.is_empty() => break,
                Decoded::Torn => {
                    return Err(StorageError::Corrupt {
                        offset,
                        path: self.log_path.clone(),
                        reason: "record ends beyond the file".into(),
                    });
                }
                Decoded::Corrupt(why) => {
                    return Err(StorageError::Corrupt {
                        offset,
                        path: self.log_path.clone(),
                        reason: why.into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes the files of the segment at `base` without opening it, durably (the directory
    /// is synced); returns the bytes its log held.
    pub fn remove_files(disk: &dyn Disk, dir: &Path, base: u64) -> Result<u64, StorageError> {
        let log_path = dir.join(log_name(base));
        // Its size, without reading it (it may be a whole segment).
        let bytes = if disk.exists(&log_path) {
            disk.open(&log_path).and_then(|f| f.size()).unwrap_or(0)
        } else {
            0
        };
        for path in [log_path, dir.join(index_name(base))] {
            match disk.remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::io("remove", &path, e));
                }
                _ => {}
            }
        }
        disk.sync_dir(dir)
            .map_err(|e| StorageError::io("fsync dir", dir, e))?;
        Ok(bytes)
    }

    /// Deletes both files of this segment.
    pub fn delete(self, disk: &dyn Disk) -> Result<(), StorageError> {
        disk.remove_file(&self.log_path)
            .map_err(|e| StorageError::io("remove", &self.log_path, e))?;
        disk.remove_file(&self.index_path)
            .map_err(|e| StorageError::io("remove", &self.index_path, e))
    }
}
