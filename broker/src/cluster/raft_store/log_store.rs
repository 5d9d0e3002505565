//! The log half of the Raft store: the vote, the committed id and the log entries; the parent
//! module has the files and the record format.
//!
//! Invariants: every write method awaits its own I/O before it returns, so writes never overlap
//! (openraft requires them serialised); the entries in memory change only after the file did,
//! so a reader never sees an entry that is not on disk (`append`) or one that is gone from it
//! (`truncate`, `purge`); `raft.log` is only ever appended to through the one handle in
//! `LogStore::file`, which a rewrite swaps for a handle on the new file.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader};
use serde::Serialize;

use super::files::{
    COMMITTED_FILE, LOG_FILE, MAX_ENTRY_BYTES, MAX_SMALL_FILE_BYTES, PURGED_FILE,
    RECORD_HEADER_BYTES, RaftStoreError, VOTE_FILE, blocking, lock, read_json, write_atomic,
};
use crate::cluster::{Entry, LogId, RaftStorageError, TypeConfig, Vote};

/// Opens the log half of the store in `dir` (which exists): reads the small files, cuts
/// `raft.log` after its valid prefix and loads the entries after the last purged id.
pub(super) fn open_log_store(dir: &Path) -> Result<LogStore, RaftStoreError> {
    let vote: Option<Vote> = read_json(&dir.join(VOTE_FILE), MAX_SMALL_FILE_BYTES)?;
    let committed: Option<Option<LogId>> =
        read_json(&dir.join(COMMITTED_FILE), MAX_SMALL_FILE_BYTES)?;
    let last_purged: Option<Option<LogId>> =
        read_json(&dir.join(PURGED_FILE), MAX_SMALL_FILE_BYTES)?;
    let last_purged = last_purged.flatten();
    let (file, entries) = open_log(&dir.join(LOG_FILE), last_purged)?;
    Ok(LogStore {
        dir: dir.to_path_buf(),
        file: Arc::new(Mutex::new(Some(file))),
        entries: Arc::new(RwLock::new(entries)),
        vote,
        committed: committed.flatten(),
        last_purged,
    })
}

/// openraft's log storage: the vote, the committed id and the log, durable in the directory.
#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    /// `raft.log`, opened for appending; `None` only after a failed rewrite.
    file: Arc<Mutex<Option<File>>>,
    /// The log by index, shared with the [`LogReader`]s.
    entries: Arc<RwLock<BTreeMap<u64, Entry>>>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// A read-only view of the log, for openraft's replication tasks.
#[derive(Debug, Clone)]
pub struct LogReader {
    entries: Arc<RwLock<BTreeMap<u64, Entry>>>,
}

impl LogStore {
    /// One line on what the log holds, for the open message.
    pub(super) fn summary(&self) -> String {
        let entries = read_entries(&self.entries);
        let first = entries.first_key_value().map(|(i, _)| *i);
        let last = entries.last_key_value().map(|(i, _)| *i);
        format!(
            "{} entries ({first:?}..={last:?}), last purged {:?}, committed {:?}",
            entries.len(),
            self.last_purged,
            self.committed
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn entries_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces `raft.log` atomically with `keep`, and reopens the append handle on it.
    async fn rewrite_log(&self, keep: &[Entry]) -> Result<(), RaftStoreError> {
        let mut bytes = Vec::new();
        for entry in keep {
            encode_record(&mut bytes, entry)?;
        }
        let path = self.path(LOG_FILE);
        let file = Arc::clone(&self.file);
        blocking(&path.clone(), move || {
            let mut handle = lock(&file);
            *handle = None;
            write_atomic(&path, &bytes)?;
            let reopened = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(RaftStoreError::io("open", &path))?;
            *handle = Some(reopened);
            Ok(())
        })
        .await
    }

    async fn save_small<T: Serialize>(
        &self,
        name: &'static str,
        value: &T,
    ) -> Result<(), RaftStoreError> {
        let bytes = serde_json::to_vec(value).map_err(RaftStoreError::encode(name))?;
        let path = self.path(name);
        blocking(&path.clone(), move || write_atomic(&path, &bytes)).await
    }
}

fn read_range<RB: RangeBounds<u64>>(map: &BTreeMap<u64, Entry>, range: &RB) -> Vec<Entry> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return Vec::new(),
        },
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e,
        Bound::Excluded(&e) => match e.checked_sub(1) {
            Some(e) => e,
            None => return Vec::new(),
        },
        Bound::Unbounded => u64::MAX,
    };
    if start > end {
        return Vec::new();
    }
    map.range(start..=end).map(|(_, e)| e.clone()).collect()
}

fn read_entries(
    entries: &RwLock<BTreeMap<u64, Entry>>,
) -> RwLockReadGuard<'_, BTreeMap<u64, Entry>> {
    entries.read().unwrap_or_else(PoisonError::into_inner)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        Ok(read_range(&read_entries(&self.entries), &range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        Ok(read_range(&read_entries(&self.entries), &range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last = read_entries(&self.entries)
            .last_key_value()
            .map(|(_, e)| e.log_id);
        Ok(LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: last.or(self.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            entries: Arc::clone(&self.entries),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), RaftStorageError> {
        self.save_small(VOTE_FILE, vote)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        if committed == self.committed {
            return Ok(());
        }
        self.save_small(COMMITTED_FILE, &committed)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let to_storage = |e: RaftStoreError| e.into_storage(ErrorSubject::Logs, ErrorVerb::Write);
        let mut bytes = Vec::new();
        for entry in &entries {
            encode_record(&mut bytes, entry).map_err(to_storage)?;
        }
        let path = self.path(LOG_FILE);
        let file = Arc::clone(&self.file);
        let written = blocking(&path.clone(), move || {
            let mut handle = lock(&file);
            let Some(file) = handle.as_mut() else {
                return Err(RaftStoreError::NotOpen { path });
            };
            file.write_all(&bytes)
                .map_err(RaftStoreError::io("append to", &path))?;
            file.sync_data().map_err(RaftStoreError::io("fsync", &path))
        })
        .await;
        if let Err(e) = written {
            callback.log_io_completed(Err(io::Error::other(e.to_string())));
            return Err(to_storage(e));
        }
        {
            let mut map = self.entries_mut();
            for entry in entries {
                map.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let keep: Vec<Entry> = {
            let map = read_entries(&self.entries);
            if map.range(log_id.index..).next().is_none() {
                return Ok(());
            }
            map.range(..log_id.index).map(|(_, e)| e.clone()).collect()
        };
        self.rewrite_log(&keep)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))?;
        self.entries_mut().split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        if self.last_purged >= Some(log_id) {
            return Ok(());
        }
        let to_storage = |e: RaftStoreError| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete);
        // First the purged id, so that a crash before the rewrite still hides the purged entries.
        self.save_small(PURGED_FILE, &Some(log_id))
            .await
            .map_err(to_storage)?;
        self.last_purged = Some(log_id);
        let first_kept = log_id.index.saturating_add(1);
        let keep: Vec<Entry> = read_entries(&self.entries)
            .range(first_kept..)
            .map(|(_, e)| e.clone())
            .collect();
        self.rewrite_log(&keep).await.map_err(to_storage)?;
        let mut map = self.entries_mut();
        let kept = map.split_off(&first_kept);
        *map = kept;
        Ok(())
    }
}

/// Appends one record (header and JSON body) for `entry` to `out`.
pub(super) fn encode_record(out: &mut Vec<u8>, entry: &Entry) -> Result<(), RaftStoreError> {
    let body = serde_json::to_vec(entry).map_err(RaftStoreError::encode("log entry"))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n <= MAX_ENTRY_BYTES)
        .ok_or(RaftStoreError::TooLarge {
            what: "log entry",
            bytes: body.len() as u64,
            limit: u64::from(MAX_ENTRY_BYTES),
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// What reading the records of a log file found.
#[derive(Debug)]
pub(super) struct Decoded {
    /// The valid records, in file order.
    pub(super) entries: Vec<Entry>,
    /// Bytes of the valid prefix: where the file is cut.
    pub(super) valid_bytes: usize,
    /// Why reading stopped before the end of the bytes, if it did.
    pub(super) stopped: Option<String>,
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

/// Reads records from `bytes` until the end or the first short, corrupt or out-of-sequence one.
pub(super) fn decode_records(bytes: &[u8]) -> Decoded {
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = 0usize;
    let stopped = loop {
        let rest = bytes.get(at..).unwrap_or_default();
        if rest.is_empty() {
            break None;
        }
        let (Some(len), Some(crc)) = (be_u32(rest, 0), be_u32(rest, 4)) else {
            break Some(format!("a short record header at byte {at}"));
        };
        if len > MAX_ENTRY_BYTES {
            break Some(format!("a record length of {len} at byte {at}"));
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| RECORD_HEADER_BYTES.checked_add(len));
        let Some(body) = end.and_then(|end| rest.get(RECORD_HEADER_BYTES..end)) else {
            break Some(format!("a short record body at byte {at}"));
        };
        if crc32c::crc32c(body) != crc {
            break Some(format!("a crc mismatch at byte {at}"));
        }
        let entry: Entry = match serde_json::from_slice(body) {
            Ok(entry) => entry,
            Err(e) => break Some(format!("an undecodable entry at byte {at}: {e}")),
        };
        if let Some(prev) = entries.last()
            && prev.log_id.index.checked_add(1) != Some(entry.log_id.index)
        {
            break Some(format!(
                "entry {} after entry {} at byte {at}",
                entry.log_id.index, prev.log_id.index
            ));
        }
        entries.push(entry);
        at = at
            .saturating_add(RECORD_HEADER_BYTES)
            .saturating_add(body.len());
    };
    Decoded {
        entries,
        valid_bytes: at,
        stopped,
    }
}

/// Opens `raft.log`, cuts it after its valid prefix and returns the entries after `last_purged`.
fn open_log(
    path: &Path,
    last_purged: Option<LogId>,
) -> Result<(File, BTreeMap<u64, Entry>), RaftStoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(RaftStoreError::io("open", path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(RaftStoreError::io("read", path))?;
    let decoded = decode_records(&bytes);
    if let Some(reason) = &decoded.stopped {
        tracing::warn!(
            path = %path.display(),
            valid_bytes = decoded.valid_bytes,
            file_bytes = bytes.len(),
            reason = %reason,
            "cutting the raft log after its valid prefix"
        );
        file.set_len(decoded.valid_bytes as u64)
            .map_err(RaftStoreError::io("truncate", path))?;
        file.sync_all().map_err(RaftStoreError::io("fsync", path))?;
    }
    let entries = decoded
        .entries
        .into_iter()
        .filter(|e| last_purged.is_none_or(|p| e.log_id.index > p.index))
        .map(|e| (e.log_id.index, e))
        .collect();
    Ok((file, entries))
}
