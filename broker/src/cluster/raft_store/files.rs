//! What both halves of the Raft store share: file names, limits, the error type, and the file
//! helpers (atomic replace, directory fsync, bounded JSON reads, the blocking pool).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use serde::de::DeserializeOwned;

use crate::cluster::{NodeId, RaftStorageError};
use crate::storage::OsDisk;

/// Largest JSON body of one log record; a longer length field marks the record corrupt.
pub const MAX_ENTRY_BYTES: u32 = 4 * 1024 * 1024;
/// Largest snapshot accepted, from disk or from a leader.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `vote.json`, `committed.json` or `purged.json` read.
pub(super) const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024;
/// Bytes of a log record before its body: length and crc32c.
pub(super) const RECORD_HEADER_BYTES: usize = 8;

pub(super) const VOTE_FILE: &str = "vote.json";
pub(super) const COMMITTED_FILE: &str = "committed.json";
pub(super) const PURGED_FILE: &str = "purged.json";
pub(super) const LOG_FILE: &str = "raft.log";
pub(super) const SNAPSHOT_FILE: &str = "snapshot.json";

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
    /// The broker's storage layer failed (an atomic replace, a directory sync).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
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
    pub(super) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io { op, path, source }
    }

    pub(super) fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Self::Encode { what, source }
    }

    /// The openraft error for this one, about `subject`, while doing `verb`.
    pub(super) fn into_storage(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> RaftStorageError {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on tokio's blocking pool; `path` names the file for a failed task's error.
pub(super) async fn blocking<T, F>(path: &Path, f: F) -> Result<T, RaftStoreError>
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

/// Replaces `path` with `bytes`: temp file, fsync, rename, fsync of the directory (the
/// broker's own atomic replace, on the real disk).
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RaftStoreError> {
    Ok(crate::groups::journal::write_atomic(
        &*OsDisk::shared(),
        path,
        bytes,
    )?)
}

/// Fsyncs a directory so that a rename or a new file in it is durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), RaftStoreError> {
    Ok(crate::groups::journal::sync_dir(&*OsDisk::shared(), dir)?)
}

/// Reads and decodes a JSON file that is only ever replaced atomically; `None` if absent.
pub(super) fn read_json<T: DeserializeOwned>(
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
