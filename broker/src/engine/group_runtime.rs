//! A consumer group at run time: its state machine behind a mutex, and a journal thread that
//! makes acknowledged progress durable with one sync per batch (group commit).

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::host::{Host, Step};
use super::thread::{self, IoThread, Next};
use crate::config::FsyncPolicy;
use crate::groups::journal::{self, Entry, Journal};
use crate::groups::{GroupConfig, GroupState, PartitionProgress};
use crate::storage::StorageError;

/// How a journal's writer answers.
type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// What a journal's writer is asked to do.
enum Persist {
    /// Write entries.
    Entries {
        entries: Vec<Entry>,
        reply: Reply<()>,
    },
    /// Merge in another broker's progress, as a snapshot.
    Merge {
        progress: Vec<PartitionProgress>,
        reply: Reply<Vec<PartitionProgress>>,
    },
}

impl Persist {
    /// Answers that the journal is closed.
    fn refuse(self) {
        match self {
            Self::Entries { reply, .. } => {
                let _ = reply.send(Err(StorageError::Closed));
            }
            Self::Merge { reply, .. } => {
                let _ = reply.send(Err(StorageError::Closed));
            }
        }
    }
}

/// Where a group's journal runs: its own thread, or the simulator's steps.
enum Runner {
    Thread(IoThread<Persist>),
    Stepped(Arc<SteppedJournal>),
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Thread(t) => t.fmt(f),
            Self::Stepped(_) => f.write_str("Stepped"),
        }
    }
}

/// A consumer group of one topic.
#[derive(Debug)]
pub struct Group {
    name: String,
    state: Mutex<GroupState>,
    journal: Runner,
}

impl Group {
    /// Opens (or creates, with `config`) the group stored in `dir`. Returns the group and the
    /// bytes recovery cut from its journal. The stored configuration wins over `config`.
    pub fn open(
        host: &Arc<Host>,
        dir: &Path,
        name: &str,
        config: GroupConfig,
        partitions: usize,
        policy: FsyncPolicy,
    ) -> Result<(Self, u64), StorageError> {
        let disk = host.disk();
        let config = match journal::read_config(&**disk, dir)? {
            Some(stored) => stored,
            None => {
                journal::write_config(&**disk, dir, &config)?;
                config
            }
        };
        let (journal, progress, cut) = Journal::open(Arc::clone(disk), dir, partitions)?;
        let mut progress = progress;
        progress.truncate(partitions.max(1));
        let state = GroupState::new(config, progress);
        let writer = Writer {
            journal,
            policy,
            host: Arc::clone(host),
            last_sync: host.clock().elapsed(),
            dirty: false,
        };
        let journal = if host.is_stepped() {
            let stepped = Arc::new(SteppedJournal {
                queue: Mutex::new(Vec::new()),
                writer: Mutex::new(Some(writer)),
            });
            host.add_journal(Arc::clone(&stepped) as Arc<dyn Step>);
            Runner::Stepped(stepped)
        } else {
            Runner::Thread(
                IoThread::spawn(format!("j-{name}"), move |rx| run_journal(writer, &rx))
                    .map_err(|e| StorageError::io("spawn journal thread for", dir, e))?,
            )
        };
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

    /// Makes journal entries durable; the receiver answers once they are (per the fsync
    /// policy).
    pub fn persist(&self, entries: Vec<Entry>) -> oneshot::Receiver<Result<(), StorageError>> {
        let (reply, rx) = oneshot::channel();
        if entries.is_empty() {
            let _ = reply.send(Ok(()));
            return rx;
        }
        self.submit(Persist::Entries { entries, reply });
        rx
    }

    /// Takes in `progress` from other brokers: merges it with the journal's, makes the result
    /// durable, and starts the state machine afresh from it (no deliveries out: what this
    /// broker handed out before is not known to be in flight any more). A cluster's new
    /// leader does this with a majority's progress before it serves.
    ///
    /// # Errors
    /// When the merged progress cannot be written.
    pub async fn restart_from(&self, progress: Vec<PartitionProgress>) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Persist::Merge { progress, reply });
        let merged = rx.await.map_err(|_| StorageError::Closed)??;
        let mut state = self.state();
        let partitions = state.partition_count();
        let mut merged = merged;
        merged.resize(partitions, PartitionProgress::default());
        *state = GroupState::new(state.config(), merged);
        Ok(())
    }

    fn submit(&self, p: Persist) {
        let refused = match &self.journal {
            Runner::Thread(t) => t.send(p).err(),
            Runner::Stepped(s) => s.push(p).err(),
        };
        if let Some(p) = refused {
            p.refuse();
        }
    }

    /// Stops the journal after it wrote, synced and compacted what was queued.
    pub fn close(&self) {
        match &self.journal {
            Runner::Thread(t) => t.close(),
            Runner::Stepped(s) => s.close(),
        }
    }
}

/// A group journal's writer: what its thread (or the simulator) runs.
struct Writer {
    journal: Journal,
    policy: FsyncPolicy,
    host: Arc<Host>,
    last_sync: Duration,
    /// Entries written and not yet synced (`interval` and `never`).
    dirty: bool,
}

impl Writer {
    /// How long until an `interval` sync is due; `None` when no sync is waiting for time.
    fn tick_in(&self) -> Option<Duration> {
        match self.policy {
            FsyncPolicy::Interval(every) => {
                Some((self.last_sync + every).saturating_sub(self.host.clock().elapsed()))
            }
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        }
    }

    /// The `interval` sync, when its time has come.
    fn tick(&mut self) {
        if self.dirty {
            if let Err(e) = self.journal.sync() {
                tracing::error!(error = %e, "group journal sync failed");
            }
            self.dirty = false;
        }
        self.last_sync = self.host.clock().elapsed();
    }

    /// Writes a batch of entries (one sync under `always`), answers each, compacts when due;
    /// then does the batch's merges.
    fn write(&mut self, batch: Vec<Persist>) {
        let mut writes = Vec::with_capacity(batch.len());
        let mut merges = Vec::new();
        for p in batch {
            match p {
                Persist::Entries { entries, reply } => writes.push((entries, reply)),
                Persist::Merge { progress, reply } => merges.push((progress, reply)),
            }
        }
        if !writes.is_empty() {
            self.write_entries(writes);
        }
        for (progress, reply) in merges {
            let merged = self.journal.merge(&progress);
            if merged.is_ok() {
                self.dirty = false;
            }
            let _ = reply.send(merged);
        }
    }

    fn write_entries(&mut self, batch: Vec<(Vec<Entry>, Reply<()>)>) {
        let entries: Vec<Entry> = batch.iter().flat_map(|(e, _)| e.iter().copied()).collect();
        let mut result = self.journal.append(&entries);
        if result.is_ok()
            && self.policy == FsyncPolicy::Always
            && crate::planted::active(crate::planted::Planted::AckBeforeJournalSync)
        {
            // Planted: answer now, sync with the next batch.
            let previous = std::mem::replace(&mut self.dirty, true);
            if previous {
                result = self.journal.sync();
            }
        } else if result.is_ok() && self.policy == FsyncPolicy::Always {
            result = self.journal.sync();
            self.last_sync = self.host.clock().elapsed();
        } else {
            self.dirty = true;
        }
        for (_, reply) in batch {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StorageError::io(
                    "journal",
                    "acks.log",
                    std::io::Error::other(e.to_string()),
                )),
            });
        }
        if result.is_ok()
            && self.journal.should_compact()
            && let Err(e) = self.journal.compact()
        {
            tracing::error!(error = %e, "group journal compaction failed");
        }
    }

    /// The last compaction, when the journal stops.
    fn finish(mut self) {
        if let Err(e) = self.journal.compact() {
            tracing::error!(error = %e, "group journal final compaction failed");
        }
    }
}

fn run_journal(mut writer: Writer, rx: &Receiver<Persist>) {
    loop {
        let first = match thread::next(rx, writer.tick_in()) {
            Next::Message(p) => p,
            Next::Tick => {
                writer.tick();
                continue;
            }
            Next::Closed => break,
        };
        let mut batch = vec![first];
        thread::drain(rx, &mut batch, 4096);
        writer.write(batch);
    }
    writer.finish();
}

/// A journal whose writes wait for the simulator's step.
struct SteppedJournal {
    queue: Mutex<Vec<Persist>>,
    /// `None` once closed.
    writer: Mutex<Option<Writer>>,
}

impl std::fmt::Debug for SteppedJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SteppedJournal")
    }
}

impl SteppedJournal {
    fn push(&self, p: Persist) -> Result<(), Persist> {
        if self.lock_writer().is_none() {
            return Err(p);
        }
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(p);
        Ok(())
    }

    fn lock_writer(&self) -> MutexGuard<'_, Option<Writer>> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.step();
        if let Some(w) = self.lock_writer().take() {
            w.finish();
        }
    }
}

impl Step for SteppedJournal {
    fn step(&self) {
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        let mut guard = self.lock_writer();
        let Some(writer) = guard.as_mut() else {
            return;
        };
        if !batch.is_empty() {
            writer.write(batch);
        } else if writer.tick_in().is_some_and(|t| t.is_zero()) {
            writer.tick();
        }
    }
}
