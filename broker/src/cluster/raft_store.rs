//! openraft's storage for the metadata Raft: vote, log and snapshots, durable in one directory.
//!
//! [`open`] returns a [`LogStore`] (openraft's `RaftLogStorage` + `RaftLogReader`) and a
//! [`StateMachine`] (`RaftStateMachine`, with [`SnapshotBuilder`]) to hand to `Raft::new`.
//!
//! # Files
//!
//! | file             | holds                                              | written by        |
//! |------------------|----------------------------------------------------|-------------------|
//! | `vote.json`      | the last saved [`Vote`](super::Vote)               | atomic replace    |
//! | `committed.json` | the last saved committed [`LogId`](super::LogId)   | atomic replace    |
//! | `purged.json`    | the last purged [`LogId`](super::LogId)            | atomic replace    |
//! | `raft.log`       | the log entries after the last purged one          | append + fsync    |
//! | `snapshot.json`  | the latest snapshot: its meta and the metadata     | atomic replace    |
//!
//! *Atomic replace* is: write `<name>.tmp`, fsync it, rename it over `<name>`, fsync the
//! directory; it returns only after all four, so a crash leaves the old file or the new one.
//! `truncate` and `purge` replace `raft.log` so; open cuts a torn tail of it in place.
//!
//! `raft.log` is a sequence of records, each:
//!
//! | bytes | field                                                   |
//! |-------|---------------------------------------------------------|
//! | 4     | `len`: length of the JSON body, u32 big-endian          |
//! | 4     | crc32c of the JSON body, u32 big-endian                 |
//! | len   | the entry as JSON (`openraft::Entry<TypeConfig>`)       |
//!
//! # Invariants
//!
//! - A write returns (and `append` calls openraft's `LogFlushed`) only once it is fsynced, and
//!   the log store's writes run one after another: every method awaits its own I/O.
//! - On open, `raft.log` is read up to its first short, corrupt (crc, JSON, over
//!   [`MAX_ENTRY_BYTES`]) or out-of-sequence record and the file is cut there. A torn tail can
//!   only hold an append whose `LogFlushed` never fired, so cutting it loses nothing Raft counted.
//!   Corruption in the middle (a failing disk) also cuts everything after it: this node then
//!   lags and the leader sends the missing entries again, but entries it had acknowledged are
//!   gone, so, as with any lost disk, Raft's guarantee rests on the other nodes meanwhile.
//! - Entries at or below the last purged id are never served: `purge` saves `purged.json`
//!   before it rewrites `raft.log`, and open drops such entries if a crash came between the two.
//! - The log in memory (a `BTreeMap` by index, for reads) always equals the valid records of
//!   `raft.log` after the last purge: it changes only after the file did.
//! - The state machine's applied state is in memory only; the *snapshot* is what is durable.
//!   On open the state machine starts from the latest snapshot and openraft re-applies the log
//!   after it, up to the saved committed id (`save_committed` is implemented for that), before
//!   `Raft::new` returns: the metadata is as complete as this node last knew it. openraft only purges logs that a
//!   snapshot covers, so nothing applied is ever lost. Persisting every apply would cost an
//!   fsync per metadata change for no gain.
//!
//! # Blocking I/O
//!
//! The files are tiny, but an fsync may still take milliseconds, and openraft calls these
//! methods from its core task; so, as `STYLE.md` asks, every read, write and fsync runs in
//! `tokio::task::spawn_blocking` and the method awaits it. That works on either tokio runtime
//! flavour (openraft's test suite uses the multi-thread one, `#[tokio::test]` the other).
//!
//! # Layout
//!
//! `log_store` holds the [`LogStore`] and the record format, `state_machine` the
//! [`StateMachine`]; this file opens both and holds the file helpers they share.

mod log_store;
mod state_machine;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use serde::de::DeserializeOwned;

pub use self::log_store::{LogReader, LogStore};
pub use self::state_machine::{SnapshotBuilder, StateMachine};
use super::{NodeId, RaftStorageError};

/// Largest JSON body of one log record; a longer length field marks the record corrupt.
pub const MAX_ENTRY_BYTES: u32 = 4 * 1024 * 1024;
/// Largest snapshot accepted, from disk or from a leader.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `vote.json`, `committed.json` or `purged.json` read.
const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024;
/// Bytes of a log record before its body: length and crc32c.
const RECORD_HEADER_BYTES: usize = 8;

const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const PURGED_FILE: &str = "purged.json";
const LOG_FILE: &str = "raft.log";
const SNAPSHOT_FILE: &str = "snapshot.json";

/// Why opening or writing the Raft store failed. Inside openraft's traits it becomes an
/// [`openraft::StorageError`] carrying this message (path included), and openraft stops the node.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    /// A file system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `fsync`, `rename`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file that is only ever replaced atomically does not parse: the disk is failing.
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A value could not be encoded as JSON.
    #[error("encoding {what} as JSON: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A log entry or snapshot is larger than this store accepts.
    #[error("{what} of {bytes} bytes is over the limit of {limit}")]
    TooLarge {
        /// A log entry or a snapshot.
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A snapshot sent by the leader does not decode.
    #[error("snapshot {id} does not decode: {reason}")]
    InvalidSnapshot {
        /// The snapshot's id.
        id: String,
        /// The decoder's error.
        reason: String,
    },
    /// The log file handle was lost by an earlier failed rewrite.
    #[error("{} is not open after an earlier failure", path.display())]
    NotOpen {
        /// The log file.
        path: PathBuf,
    },
    /// The blocking task doing the I/O panicked or was cancelled.
    #[error("the I/O task for {} failed: {reason}", path.display())]
    Task {
        /// The file it was working on.
        path: PathBuf,
        /// The join error.
        reason: String,
    },
}

impl RaftStoreError {
    fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io { op, path, source }
    }

    fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Self::Encode { what, source }
    }

    /// The openraft error for this one, about `subject`, while doing `verb`.
    fn into_storage(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> RaftStorageError {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// Opens (creating it if needed) the Raft store in `dir`: cuts a torn log tail, loads the vote,
/// the committed and purged ids, the log and the latest snapshot.
pub async fn open(dir: &Path) -> Result<(LogStore, StateMachine), RaftStoreError> {
    let owned = dir.to_path_buf();
    blocking(dir, move || open_blocking(&owned)).await
}

fn open_blocking(dir: &Path) -> Result<(LogStore, StateMachine), RaftStoreError> {
    fs::create_dir_all(dir).map_err(RaftStoreError::io("create dir", dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let log = log_store::open_log_store(dir)?;
    // The log file may have just been created.
    sync_dir(dir)?;
    let machine = state_machine::open_state_machine(dir)?;
    tracing::info!(
        dir = %dir.display(),
        log = %log.summary(),
        snapshot = ?machine.snapshot_last_log_id(),
        "opened the raft store"
    );
    Ok((log, machine))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on tokio's blocking pool; `path` names the file for a failed task's error.
async fn blocking<T, F>(path: &Path, f: F) -> Result<T, RaftStoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RaftStoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(RaftStoreError::Task {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Replaces `path` with `bytes`: temp file, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RaftStoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(RaftStoreError::io("create", &tmp))?;
    file.write_all(bytes)
        .map_err(RaftStoreError::io("write", &tmp))?;
    file.sync_all().map_err(RaftStoreError::io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(RaftStoreError::io("rename", path))?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Fsyncs a directory so that a rename or a new file in it is durable.
fn sync_dir(dir: &Path) -> Result<(), RaftStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RaftStoreError::io("fsync dir", dir))
}

/// Reads and decodes a JSON file that is only ever replaced atomically; `None` if absent.
fn read_json<T: DeserializeOwned>(
    path: &Path,
    max_bytes: u64,
) -> Result<Option<T>, RaftStoreError> {
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RaftStoreError::io("stat", path)(e)),
    };
    if size > max_bytes {
        return Err(RaftStoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("{size} bytes, over the limit of {max_bytes}"),
        });
    }
    let raw = fs::read(path).map_err(RaftStoreError::io("read", path))?;
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|e| RaftStoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests;
