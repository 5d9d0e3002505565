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
//! [`StateMachine`], `files` the names, limits, errors and file helpers both share; this file
//! opens both.

mod files;
mod log_store;
mod state_machine;

use std::fs;
use std::path::{Path, PathBuf};

pub use self::files::{MAX_ENTRY_BYTES, MAX_SNAPSHOT_BYTES, RaftStoreError};
use self::files::{blocking, sync_dir};
pub use self::log_store::{LogReader, LogStore};
pub use self::state_machine::{SnapshotBuilder, StateMachine};

/// Where a broker keeps its Raft files, under its data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("raft")
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

#[cfg(test)]
mod tests;
