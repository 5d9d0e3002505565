//! A consumer group at run time: its state machine behind a mutex, and a journal thread that
//! makes acknowledged progress durable with one sync per batch (group commit).

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

use super::thread::{self, IoThread, Next};
use crate::config::FsyncPolicy;
use crate::groups::journal::{self, Journal};
use crate::groups::{GroupConfig, GroupState};
use crate::storage::StorageError;

struct Persist {
    done: Vec<(u32, u64)>,
    reply: oneshot::Sender<Result<(), StorageError>>,
}

/// A consumer group of one topic.
#[derive(Debug)]
pub struct Group {
    name: String,
    state: Mutex<GroupState>,
    journal: IoThread<Persist>,
}

impl Group {
    /// Opens (or creates, with `config`) the group stored in `dir`. Returns the group and the
    /// bytes recovery cut from its journal. The stored configuration wins over `config`.
    pub fn open(
        dir: &Path,
        name: &str,
        config: GroupConfig,
        partitions: usize,
        policy: FsyncPolicy,
    ) -> Result<(Self, u64), StorageError> {
        let config = match journal::read_config(dir)? {
            Some(stored) => stored,
            None => {
                journal::write_config(dir, &config)?;
                config
            }
        };
        let (journal, progress, cut) = Journal::open(dir, partitions)?;
        let mut progress = progress;
        progress.truncate(partitions.max(1));
        let state = GroupState::new(config, progress);
        let journal = IoThread::spawn(format!("j-{name}"), move |rx| {
            run_journal(journal, rx, policy);
        })
        .map_err(|e| StorageError::io("spawn journal thread for", dir, e))?;
        Ok((
            Self {
                name: name.to_string(),
                state: Mutex::new(state),
                journal,
            },
            cut,
        ))
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state machine. Never hold the guard across an await.
    pub fn state(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes done records durable; the receiver answers once they are (per the fsync policy).
    pub fn persist(&self, done: Vec<(u32, u64)>) -> oneshot::Receiver<Result<(), StorageError>> {
        let (reply, rx) = oneshot::channel();
        if done.is_empty() {
            let _ = reply.send(Ok(()));
            return rx;
        }
        if let Err(p) = self.journal.send(Persist { done, reply }) {
            let _ = p.reply.send(Err(StorageError::Closed));
        }
        rx
    }

    /// Stops the journal thread after it wrote, synced and compacted what was queued.
    pub fn close(&self) {
        self.journal.close();
    }
}

fn run_journal(mut journal: Journal, rx: Receiver<Persist>, policy: FsyncPolicy) {
    let mut last_sync = Instant::now();
    let mut dirty = false;
    loop {
        let first = match thread::next(&rx, policy, last_sync) {
            Next::Message(p) => p,
            Next::Tick => {
                if dirty {
                    if let Err(e) = journal.sync() {
                        tracing::error!(error = %e, "group journal sync failed");
                    }
                    dirty = false;
                }
                last_sync = Instant::now();
                continue;
            }
            Next::Closed => break,
        };
        let mut batch = vec![first];
        thread::drain(&rx, &mut batch, 4096);
        let done: Vec<(u32, u64)> = batch.iter().flat_map(|p| p.done.iter().copied()).collect();
        let mut result = journal.append(&done);
        if result.is_ok() && policy == FsyncPolicy::Always {
            result = journal.sync();
            last_sync = Instant::now();
        } else {
            dirty = true;
        }
        for p in batch {
            let _ = p.reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StorageError::io(
                    "journal",
                    "acks.log",
                    std::io::Error::other(e.to_string()),
                )),
            });
        }
        if result.is_ok()
            && journal.should_compact()
            && let Err(e) = journal.compact()
        {
            tracing::error!(error = %e, "group journal compaction failed");
        }
    }
    if let Err(e) = journal.compact() {
        tracing::error!(error = %e, "group journal final compaction failed");
    }
}
