//! A partition at run time: its log, owned by one writer thread that batches appends and
//! shares one `fdatasync` among every produce waiting (group commit).
//!
//! Invariants:
//! 1. Offsets are assigned only by the writer thread, in the order produces reached it.
//! 2. `readable_end` only moves forward, and under `--fsync always` only after the sync that
//!    made those records durable: a consumer never sees a record that a crash could take back.
//! 3. A produce is answered after its records are written (and synced, under `always`).
//! 4. After a failed sync the partition refuses further writes: what reached the disk is
//!    unknown, so it must be recovered by a restart rather than built upon.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use super::thread::{self, IoThread, Next};
use crate::config::FsyncPolicy;
use crate::metrics::{Metrics, topic_labels};
use crate::protocol::Record;
use crate::storage::{LogConfig, PartitionLog, RecoveryReport, StorageError, StoredRecord, now_ms};

/// Most produce requests folded into one write and one sync.
const MAX_BATCH_COMMANDS: usize = 4096;

/// What the writer answers per record: its offset and whether it was a duplicate.
pub type AppendReply = Result<Vec<(u64, bool)>, StorageError>;

enum Command {
    Append {
        records: Vec<Record>,
        reply: oneshot::Sender<AppendReply>,
    },
    Retain {
        min_done: u64,
        retention_bytes: u64,
        retention_ms: u64,
        reply: oneshot::Sender<Result<usize, StorageError>>,
    },
}

/// A partition: its log, its writer thread and what readers may see.
#[derive(Debug)]
pub struct Partition {
    id: u32,
    log: Arc<RwLock<PartitionLog>>,
    writer: IoThread<Command>,
    readable_end: Arc<AtomicU64>,
    start_offset: Arc<AtomicU64>,
    size_bytes: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    max_record_bytes: usize,
}

struct Writer {
    topic: String,
    log: Arc<RwLock<PartitionLog>>,
    readable_end: Arc<AtomicU64>,
    start_offset: Arc<AtomicU64>,
    size_bytes: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    notify: Arc<Notify>,
    policy: FsyncPolicy,
    metrics: Arc<Metrics>,
    /// Dedup ids seen within the window and the offset each got. SipHash (std's): the keys are
    /// chosen by clients and live for the window. One `Arc<str>` per id serves both this map and
    /// `dedup_order`.
    dedup: HashMap<Arc<str>, u64>,
    dedup_order: VecDeque<(u64, Arc<str>)>,
    dedup_window_ms: u64,
    pending_sync: Unsynced,
    unsynced_records: u64,
    last_sync: Instant,
}

impl Partition {
    /// Opens the partition in `dir` and starts its writer thread.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        topic: &str,
        id: u32,
        dir: &Path,
        log_config: LogConfig,
        policy: FsyncPolicy,
        dedup_window: Duration,
        notify: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        let (log, report) = PartitionLog::open(dir, log_config)?;
        let window_ms = u64::try_from(dedup_window.as_millis()).unwrap_or(u64::MAX);
        let mut dedup = HashMap::new();
        let mut dedup_order = VecDeque::new();
        if window_ms > 0 {
            log.scan_recent(now_ms().saturating_sub(window_ms), |r| {
                if let Some(id) = r.record.dedup_id.as_deref()
                    && !dedup.contains_key(id)
                {
                    let id: Arc<str> = Arc::from(id);
                    dedup.insert(Arc::clone(&id), r.offset);
                    dedup_order.push_back((r.timestamp_ms, id));
                }
            })?;
        }
        let readable_end = Arc::new(AtomicU64::new(log.end_offset()));
        let start_offset = Arc::new(AtomicU64::new(log.start_offset()));
        let size_bytes = Arc::new(AtomicU64::new(log.size_bytes()));
        let failed = Arc::new(AtomicBool::new(false));
        let log = Arc::new(RwLock::new(log));
        let state = Writer {
            topic: topic.to_string(),
            log: Arc::clone(&log),
            readable_end: Arc::clone(&readable_end),
            start_offset: Arc::clone(&start_offset),
            size_bytes: Arc::clone(&size_bytes),
            failed: Arc::clone(&failed),
            notify,
            policy,
            metrics,
            dedup,
            dedup_order,
            dedup_window_ms: window_ms,
            pending_sync: Vec::new(),
            unsynced_records: 0,
            last_sync: Instant::now(),
        };
        let writer = IoThread::spawn(format!("w-{topic}-{id}"), move |rx| state.run(rx))
            .map_err(|e| StorageError::io("spawn writer thread for", dir, e))?;
        Ok((
            Self {
                id,
                log,
                writer,
                readable_end,
                start_offset,
                size_bytes,
                failed,
                max_record_bytes: log_config.max_record_bytes,
            },
            report,
        ))
    }

    /// The partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Records below this offset may be read.
    pub fn readable_end(&self) -> u64 {
        self.readable_end.load(Ordering::Acquire)
    }

    /// Oldest retained offset.
    pub fn start_offset(&self) -> u64 {
        self.start_offset.load(Ordering::Acquire)
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// Whether a failed sync stopped this partition's writes.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Hands a command to the writer; gives it back if the writer has stopped.
    fn send(&self, cmd: Command) -> Result<(), Command> {
        self.writer.send(cmd)
    }

    /// Queues records for appending, in call order; the receiver yields offsets once written
    /// (and synced under `always`).
    pub fn append(&self, records: Vec<Record>) -> oneshot::Receiver<AppendReply> {
        let (reply, rx) = oneshot::channel();
        let too_big = records
            .iter()
            .map(crate::storage::record::encoded_size)
            .find(|s| *s > self.max_record_bytes);
        if let Some(bytes) = too_big {
            let _ = reply.send(Err(StorageError::RecordTooLarge {
                bytes,
                max: self.max_record_bytes,
            }));
            return rx;
        }
        if let Err(Command::Append { reply, .. }) = self.send(Command::Append { records, reply }) {
            let _ = reply.send(Err(StorageError::Closed));
        }
        rx
    }

    /// Reads up to `max_records` readable records from `from`.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let upto = self.readable_end();
        let log = self.log.read().unwrap_or_else(PoisonError::into_inner);
        log.read(from, max_records, max_bytes, upto)
    }

    /// Applies retention: deletes old segments below `min_done` (the lowest offset some
    /// group still needs) while over the size or age limit.
    pub fn retain(
        &self,
        min_done: u64,
        retention_bytes: u64,
        retention_ms: u64,
    ) -> oneshot::Receiver<Result<usize, StorageError>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Retain {
            min_done,
            retention_bytes,
            retention_ms,
            reply,
        };
        if let Err(Command::Retain { reply, .. }) = self.send(cmd) {
            let _ = reply.send(Err(StorageError::Closed));
        }
        rx
    }

    /// Stops the writer after it finished what was queued (and synced it); waits for it.
    pub fn close(&self) {
        self.writer.close();
    }
}

/// Files written since the last sync, each once.
type Unsynced = Vec<(Arc<std::fs::File>, std::path::PathBuf)>;

/// Adds `written` to `pending`, each file once. Under `interval` and `never` many batches pass
/// between syncs; a list with an entry per batch grew without bound and made the next sync (under
/// `never`, the final one at shutdown) call fdatasync once per batch: 27 s to stop after a
/// million records.
fn add_unsynced(pending: &mut Unsynced, written: Unsynced) {
    for (file, path) in written {
        if !pending.iter().any(|(f, _)| Arc::ptr_eq(f, &file)) {
            pending.push((file, path));
        }
    }
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) {
        loop {
            let first = match thread::next(&rx, self.policy, self.last_sync) {
                Next::Message(cmd) => cmd,
                Next::Tick => {
                    self.sync_if_due();
                    continue;
                }
                Next::Closed => break,
            };
            let mut batch = vec![first];
            thread::drain(&rx, &mut batch, MAX_BATCH_COMMANDS);
            let mut appends = Vec::new();
            let mut others = Vec::new();
            for cmd in batch {
                match cmd {
                    Command::Append { records, reply } => appends.push((records, reply)),
                    other => others.push(other),
                }
            }
            if !appends.is_empty() {
                self.append_batch(appends);
            }
            for cmd in others {
                if let Command::Retain {
                    min_done,
                    retention_bytes,
                    retention_ms,
                    reply,
                } = cmd
                {
                    let _ = reply.send(self.retain(min_done, retention_bytes, retention_ms));
                }
            }
            if matches!(self.policy, FsyncPolicy::Interval(_)) {
                self.sync_if_due();
            }
        }
        // Shutting down: make everything written durable whatever the policy.
        if let Err(e) = self.sync() {
            tracing::error!(topic = %self.topic, error = %e, "final sync failed");
        }
    }

    fn expire_dedup(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.dedup_window_ms);
        while let Some((ts, _)) = self.dedup_order.front() {
            if *ts >= cutoff {
                break;
            }
            if let Some((_, id)) = self.dedup_order.pop_front() {
                self.dedup.remove(&*id);
            }
        }
    }

    fn append_batch(&mut self, batch: Vec<(Vec<Record>, oneshot::Sender<AppendReply>)>) {
        if self.failed.load(Ordering::Acquire) {
            for (_, reply) in batch {
                let _ = reply.send(Err(StorageError::Fenced));
            }
            return;
        }
        let now = now_ms();
        self.expire_dedup(now);
        let mut log = self.log.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = log.end_offset();
        let mut answers: Vec<Vec<(u64, bool)>> = Vec::with_capacity(batch.len());
        // This batch's new ids go into the index at once (a repeat later in the same batch is
        // then a duplicate too) and come out again if the batch does not become durable: only
        // this thread reads the index, and it answers no one before the outcome is known.
        let mut fresh_ids: Vec<Arc<str>> = Vec::new();
        let mut to_write: Vec<&Record> = Vec::new();
        for (records, _) in &batch {
            let mut answer = Vec::with_capacity(records.len());
            for r in records {
                let id = r.dedup_id.as_deref();
                match id.and_then(|id| self.dedup.get(id).copied()) {
                    Some(offset) => answer.push((offset, true)),
                    None => {
                        if let Some(id) = id {
                            let id: Arc<str> = Arc::from(id);
                            self.dedup.insert(Arc::clone(&id), next);
                            fresh_ids.push(id);
                        }
                        answer.push((next, false));
                        to_write.push(r);
                        next += 1;
                    }
                }
            }
            answers.push(answer);
        }
        let written = to_write.len() as u64;
        let appended = log.append(to_write.iter().copied(), now);
        let poisoned = log.is_poisoned();
        let end = log.end_offset();
        let start = log.start_offset();
        let size = log.size_bytes();
        add_unsynced(&mut self.pending_sync, log.take_unsynced());
        drop(log);
        if let Err(e) = appended {
            // A failed write was undone (the segment is as before), so the partition goes on
            // and a later produce may succeed once the cause (a full disk, say) is gone. Only
            // a write that could not be undone fences it.
            self.metrics.storage_errors.inc();
            if poisoned {
                self.fence(&e);
            } else {
                tracing::error!(topic = %self.topic, error = %e, "append failed; nothing was written");
            }
            self.forget(&fresh_ids);
            for (_, reply) in batch {
                let _ = reply.send(Err(e.duplicate()));
            }
            return;
        }
        self.unsynced_records += written;
        if self.policy == FsyncPolicy::Always
            && let Err(e) = self.sync()
        {
            self.metrics.storage_errors.inc();
            self.fence(&e);
            self.forget(&fresh_ids);
            for (_, reply) in batch {
                let _ = reply.send(Err(StorageError::Fenced));
            }
            return;
        }
        self.dedup_order
            .extend(fresh_ids.into_iter().map(|id| (now, id)));
        self.readable_end.store(end, Ordering::Release);
        self.start_offset.store(start, Ordering::Release);
        self.size_bytes.store(size, Ordering::Relaxed);
        self.metrics
            .produced_records
            .get_or_create(&topic_labels(&self.topic))
            .inc_by(written);
        let dups = answers.iter().flatten().filter(|(_, d)| *d).count() as u64;
        if dups > 0 {
            self.metrics
                .duplicate_records
                .get_or_create(&topic_labels(&self.topic))
                .inc_by(dups);
        }
        self.notify.notify_waiters();
        for ((_, reply), answer) in batch.into_iter().zip(answers) {
            let _ = reply.send(Ok(answer));
        }
    }

    /// Takes the ids of a batch that did not become durable out of the dedup index: a retry
    /// of theirs must be appended, not answered with an offset that holds nothing.
    fn forget(&mut self, ids: &[Arc<str>]) {
        for id in ids {
            self.dedup.remove(&**id);
        }
    }

    /// After a failed sync (or a write that could not be undone) what reached the disk is
    /// unknown: refuse further writes rather than assign offsets on top of an uncertain tail.
    /// Recovery at restart settles it.
    fn fence(&self, e: &StorageError) {
        tracing::error!(topic = %self.topic, error = %e, "the partition stops taking writes until the broker restarts");
        self.failed.store(true, Ordering::Release);
    }

    fn sync_if_due(&mut self) {
        if let FsyncPolicy::Interval(every) = self.policy
            && self.last_sync.elapsed() >= every
            && let Err(e) = self.sync()
        {
            self.metrics.storage_errors.inc();
            self.fence(&e);
        }
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.last_sync = Instant::now();
        if self.pending_sync.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        for (file, path) in self.pending_sync.drain(..) {
            file.sync_data()
                .map_err(|e| StorageError::io("fdatasync", path, e))?;
        }
        self.metrics
            .fsync_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .fsync_batch_records
            .observe(self.unsynced_records as f64);
        self.unsynced_records = 0;
        Ok(())
    }

    fn retain(
        &mut self,
        min_done: u64,
        retention_bytes: u64,
        retention_ms: u64,
    ) -> Result<usize, StorageError> {
        let now = now_ms();
        let mut log = self.log.write().unwrap_or_else(PoisonError::into_inner);
        let removed = log.delete_front(|end, bytes, last_ts| {
            let over_size = retention_bytes > 0 && bytes > retention_bytes;
            let too_old = retention_ms > 0 && last_ts.saturating_add(retention_ms) < now;
            end <= min_done && (over_size || too_old)
        })?;
        self.start_offset
            .store(log.start_offset(), Ordering::Release);
        self.size_bytes.store(log.size_bytes(), Ordering::Relaxed);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unsynced_file_is_synced_once_however_many_batches_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let path = dir.path().join(name);
            (Arc::new(std::fs::File::create(&path).unwrap()), path)
        };
        let (log, index) = (open("0.log"), open("0.index"));
        let mut pending = Unsynced::new();
        for _ in 0..1_000 {
            add_unsynced(&mut pending, vec![log.clone(), index.clone()]);
        }
        let rolled = open("1.log");
        add_unsynced(&mut pending, vec![rolled.clone(), log.clone()]);
        let names: Vec<_> = pending.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(names, [log.1, index.1, rolled.1]);
    }
}
