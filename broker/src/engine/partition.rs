//! A partition at run time: its log, the records appended but not yet written, its commit
//! point, and how it writes and syncs them.
//!
//! A produce is one short critical section on the caller's thread: dedup, offsets, and encoding
//! into the partition's write buffer. The buffer is written (and, under `--fsync always`,
//! synced) when the event loop runs out of work (see `syncer`), so one `write` and one
//! `fdatasync` serve every produce that was ready by then, the way Redis writes its AOF buffer
//! once per event loop turn. The produce is acknowledged when the commit point reaches it.
//!
//! Invariants:
//! 1. Offsets are assigned under the append lock, in the order produces took it, and buffered
//!    records are written in that order: the log stays dense.
//! 2. Readers see only committed records (`Commit::end`): written, and under `--fsync always`
//!    synced, so a consumer never sees a record that a crash could take back.
//! 3. A produce is acknowledged after its records (and any duplicate it was answered with) are
//!    committed.
//! 4. A failed write was undone: every record buffered with it is refused (its producer may
//!    retry), its dedup ids are forgotten, and offsets are given again from the log's end.
//! 5. After a failed sync, or a failed write that could not be undone, the partition refuses
//!    further writes: what reached the disk is unknown, so it must be recovered by a restart
//!    rather than built upon. A failed sync first cuts what was written since the last good
//!    one, which the kernel may have dropped (see `Segment::cut_to_durable`).
//! 6. At most one flush (write, sync, commit) of a partition runs at a time.
//! 7. In a cluster ([`CommitMode::Replicated`]) a flush only moves the partition's *durable*
//!    end; the commit point is moved by replication (the end a majority holds, see
//!    `crate::replication`). A follower appends its leader's records as they are, offsets and
//!    timestamps included, and may cut an uncommitted divergent tail; never a committed record.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, watch};

use super::commit::{Commit, Wait};
use super::host::Host;
use super::syncer::Flush;
use crate::config::FsyncPolicy;
use crate::metrics::{Metrics, topic_labels};
use crate::protocol::Record;
use crate::storage::{Batch, LogConfig, PartitionLog, RecoveryReport, StorageError, StoredRecord};

/// What an append gives each record: its offset and whether it was a duplicate.
pub type Answers = Vec<(u64, bool)>;

/// An append that buffered (or found) its records: the answers, and what to wait on before
/// acknowledging them.
#[derive(Debug)]
pub struct Appended {
    /// Offset and duplicate flag per record, in request order.
    pub answers: Answers,
    /// Resolves once the answers are committed.
    pub committed: Wait,
}

/// What moves a partition's commit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// This node alone: records are committed once durable here.
    Local,
    /// A cluster: records are committed once a majority of replicas holds them, which
    /// replication reports through [`Partition::advance_commit`].
    Replicated,
}

/// How far a partition's log is durable here (written, and synced if the policy says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Durable {
    /// Records below this offset are durable.
    pub end: u64,
    /// Writes that failed so far: a waiter that sees this grow knows its records were refused.
    pub failures: u64,
    /// The partition stopped taking writes.
    pub fenced: bool,
}

/// A partition: a handle on its shared state, which the sync queue also holds while the
/// partition waits for its flush.
#[derive(Debug)]
pub struct Partition {
    id: u32,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    host: Arc<Host>,
    policy: FsyncPolicy,
    log: RwLock<PartitionLog>,
    appender: Mutex<Appender>,
    commit: Commit,
    mode: CommitMode,
    durable: watch::Sender<Durable>,
    /// The log's written end, moved by every write: what wakes a leader's replication.
    written: watch::Sender<u64>,
    start_offset: AtomicU64,
    size_bytes: AtomicU64,
    max_record_bytes: usize,
    metrics: Arc<Metrics>,
    produced: Counter,
    duplicates: Counter,
}

/// The append side: what is buffered, the dedup index, and the flush's bookkeeping.
#[derive(Debug)]
struct Appender {
    /// The offset the next record gets: the log's end plus what is buffered.
    next: u64,
    /// Records numbered and encoded, not yet written.
    batch: Batch,
    /// The buffer a flush gives back, to be reused.
    spare: Batch,
    /// Dedup ids of buffered records, with their append time.
    batch_ids: Vec<(u64, Arc<str>)>,
    /// Dedup ids seen within the window and the offset each got. SipHash (std's): the keys are
    /// chosen by clients and live for the window. One `Arc<str>` per id serves both this map and
    /// `dedup_order`.
    dedup: HashMap<Arc<str>, u64>,
    dedup_order: VecDeque<(u64, Arc<str>)>,
    dedup_window_ms: u64,
    /// Records written since the last sync.
    unsynced_records: u64,
    /// On the host's clock.
    last_sync: Duration,
    /// In the sync queue for a write (due at once) or for an `interval` sync (due later).
    queued_write: bool,
    queued_sync: bool,
    flushing: bool,
    closed: bool,
}

impl Appender {
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
}

impl Partition {
    /// Opens the partition in `dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        host: &Arc<Host>,
        topic: &str,
        id: u32,
        dir: &Path,
        log_config: LogConfig,
        policy: FsyncPolicy,
        dedup_window: Duration,
        readers: Arc<Notify>,
        metrics: Arc<Metrics>,
        mode: CommitMode,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        let (log, report) = PartitionLog::open(Arc::clone(host.disk()), dir, log_config)?;
        let window_ms = u64::try_from(dedup_window.as_millis()).unwrap_or(u64::MAX);
        let mut dedup = HashMap::new();
        let mut dedup_order = VecDeque::new();
        if window_ms > 0 {
            let unreadable =
                log.scan_recent(host.clock().wall_ms().saturating_sub(window_ms), |r| {
                    if let Some(id) = r.record.dedup_id.as_deref()
                        && !dedup.contains_key(id)
                    {
                        let id: Arc<str> = Arc::from(id);
                        dedup.insert(Arc::clone(&id), r.offset);
                        dedup_order.push_back((r.timestamp_ms, id));
                    }
                });
            if unreadable > 0 {
                tracing::warn!(partition = %format!("{topic}/{id}"), records = unreadable, "records in the dedup window could not be read; their ids are not remembered");
            }
        }
        let end = log.end_offset();
        let labels = topic_labels(topic);
        let produced = metrics.produced_records.get_or_create(&labels).clone();
        let duplicates = metrics.duplicate_records.get_or_create(&labels).clone();
        let inner = Inner {
            name: format!("{topic}/{id}"),
            host: Arc::clone(host),
            policy,
            start_offset: AtomicU64::new(log.start_offset()),
            size_bytes: AtomicU64::new(log.size_bytes()),
            log: RwLock::new(log),
            appender: Mutex::new(Appender {
                next: end,
                batch: Batch::default(),
                spare: Batch::default(),
                batch_ids: Vec::new(),
                dedup,
                dedup_order,
                dedup_window_ms: window_ms,
                unsynced_records: 0,
                last_sync: host.clock().elapsed(),
                queued_write: false,
                queued_sync: false,
                flushing: false,
                closed: false,
            }),
            // A replicated partition does not know what the cluster committed until its leader
            // says: it starts at nothing (readers are served only by the leader, once it has
            // recovered and replicated).
            commit: Commit::new(if mode == CommitMode::Local { end } else { 0 }, readers),
            mode,
            durable: watch::Sender::new(Durable {
                end,
                failures: 0,
                fenced: false,
            }),
            written: watch::Sender::new(end),
            max_record_bytes: log_config.max_record_bytes,
            metrics,
            produced,
            duplicates,
        };
        Ok((
            Self {
                id,
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    /// The partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Records below this offset are committed and may be read.
    pub fn readable_end(&self) -> u64 {
        self.inner.commit.end()
    }

    /// Oldest retained offset.
    pub fn start_offset(&self) -> u64 {
        self.inner.start_offset.load(Ordering::Acquire)
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.inner.size_bytes.load(Ordering::Relaxed)
    }

    /// Whether a failed sync or write stopped this partition's writes.
    pub fn is_failed(&self) -> bool {
        self.inner.commit.is_fenced()
    }

    /// How far the log is durable here, and a way to wait for it to move.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.inner.durable.subscribe()
    }

    /// The written end, and a way to wait for it to move.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.inner.written.subscribe()
    }

    /// Records below this offset are written here (durable or about to be).
    pub fn written_end(&self) -> u64 {
        self.inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .end_offset()
    }

    /// How its commit point moves.
    pub fn mode(&self) -> CommitMode {
        self.inner.mode
    }

    /// Moves the commit point of a replicated partition to `to` (never back): replication
    /// found that a majority holds the records below it.
    pub fn advance_commit(&self, to: u64) {
        self.inner.commit.advance(to);
    }

    /// Answers every produce waiting for the commit point with `e`: this node stopped leading
    /// the partition, and what it appended may or may not be committed by the next leader.
    pub fn fail_waiting(&self, e: &StorageError) {
        self.inner.commit.fail_waiting(e);
    }

    /// Appends records that the partition's leader (or, during recovery, another replica)
    /// holds, as they are: their offsets must continue the log, and their timestamps and dedup
    /// ids are kept. Never blocks on the disk; wait on [`Partition::durable`] for them.
    pub fn append_replicated(&self, records: &[StoredRecord]) -> Result<u64, StorageError> {
        let inner = &self.inner;
        let mut a = inner.lock_appender();
        if a.closed {
            return Err(StorageError::Closed);
        }
        if inner.commit.is_fenced() {
            return Err(StorageError::Fenced);
        }
        for r in records {
            if r.offset != a.next {
                return Err(StorageError::Corrupt {
                    offset: r.offset,
                    path: std::path::PathBuf::from(&inner.name),
                    reason: format!(
                        "a replicated record does not follow the log's end {}",
                        a.next
                    ),
                });
            }
            if let Some(id) = r.record.dedup_id.as_deref() {
                let id: Arc<str> = Arc::from(id);
                a.dedup.insert(Arc::clone(&id), r.offset);
                a.batch_ids.push((r.timestamp_ms, id));
            }
            a.batch.push(r.offset, r.timestamp_ms, &r.record);
            a.next += 1;
        }
        if !records.is_empty() && !a.queued_write {
            a.queued_write = true;
            inner
                .host
                .schedule_flush(Arc::clone(&self.inner) as Arc<dyn Flush>, true, None);
        }
        Ok(a.next)
    }

    /// Cuts the log back to `end`, durably: a divergent tail that the leader's records
    /// replace. Refused below the commit point (a committed record is never cut). Waits for a
    /// flush that runs; call it when nothing is buffered (a follower waits for its appends to
    /// be durable before it takes the next request). Blocking. Returns the records cut.
    pub fn truncate_to(&self, end: u64) -> Result<u64, StorageError> {
        self.rewrite(|log, commit| {
            if end < commit {
                return Err(format!(
                    "refusing to cut the log to {end}: below the commit point {commit}"
                ));
            }
            Ok(log.truncate_to(end))
        })
    }

    /// Cuts every record, committed ones too, durably: the first step of starting the log
    /// again at its leader's log start (`replication::replica::Restart`), whose log holds none
    /// of them. Blocking, as [`Partition::truncate_to`]. Returns the records cut.
    pub fn clear(&self) -> Result<u64, StorageError> {
        self.rewrite(|log, _| {
            let start = log.start_offset();
            Ok(log.truncate_to(start))
        })
    }

    /// Starts the log again, empty, at `start` (after [`Partition::clear`]): the leader's log
    /// starts there and every record below it is committed, so the commit point moves there
    /// too. Blocking, as [`Partition::truncate_to`].
    pub fn restart_at(&self, start: u64) -> Result<(), StorageError> {
        self.rewrite(|log, _| Ok(log.restart_at(start)))?;
        self.inner.commit.advance(start);
        Ok(())
    }

    /// Changes the log with `change` (given the log and the commit point; an `Err` refuses
    /// the change), once no flush runs, and brings the append state in line with the log it
    /// leaves. A change that failed part of the way stops the partition's writes.
    fn rewrite(
        &self,
        change: impl FnOnce(&mut PartitionLog, u64) -> Result<Result<u64, StorageError>, String>,
    ) -> Result<u64, StorageError> {
        let inner = &self.inner;
        loop {
            let mut a = inner.lock_appender();
            if a.flushing || !a.batch.is_empty() {
                drop(a);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let mut log = inner.log.write().unwrap_or_else(PoisonError::into_inner);
            let changed = match change(&mut log, inner.commit.end()) {
                Ok(changed) => changed,
                Err(reason) => {
                    return Err(StorageError::Corrupt {
                        offset: log.end_offset(),
                        path: std::path::PathBuf::from(&inner.name),
                        reason,
                    });
                }
            };
            inner.store_sizes(&log);
            let (now_start, now_end) = (log.start_offset(), log.end_offset());
            drop(log);
            a.next = now_end;
            a.dedup
                .retain(|_, offset| (now_start..now_end).contains(offset));
            let dedup = &a.dedup;
            let kept: VecDeque<(u64, Arc<str>)> = a
                .dedup_order
                .iter()
                .filter(|(_, id)| dedup.contains_key(&**id))
                .cloned()
                .collect();
            a.dedup_order = kept;
            // An empty log is durable wherever it starts; a cut one as far as it was.
            let empty = now_start == now_end;
            inner.durable.send_modify(|d| {
                d.end = if empty { now_end } else { d.end.min(now_end) };
            });
            inner.written.send_replace(now_end);
            // A produce waiting here was appended by a leader that has since been deposed (a
            // follower takes no produces): its offset may now hold another record.
            inner.commit.fail_waiting(&StorageError::NotLeader);
            if changed.is_err() {
                inner.commit.fence();
                inner.durable.send_modify(|d| d.fenced = true);
            }
            return changed;
        }
    }

    /// Reads up to `max_records` records from `from` that are written here, committed or not:
    /// what a leader sends its followers.
    pub fn read_written(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let log = self
            .inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        log.read(from, max_records, max_bytes, u64::MAX)
    }

    /// Numbers and buffers `records` now, in call order (or finds them by dedup id); the
    /// answer says what to wait on before acknowledging them. Never blocks on the disk.
    pub fn append(&self, records: &[&Record]) -> Result<Appended, StorageError> {
        let inner = &self.inner;
        if let Some(bytes) = records
            .iter()
            .map(|r| crate::storage::record::encoded_size(r))
            .find(|s| *s > inner.max_record_bytes)
        {
            return Err(StorageError::RecordTooLarge {
                bytes,
                max: inner.max_record_bytes,
            });
        }
        let now = inner.host.clock().wall_ms();
        let mut a = inner.lock_appender();
        if a.closed {
            return Err(StorageError::Closed);
        }
        if inner.commit.is_fenced() {
            return Err(StorageError::Fenced);
        }
        a.expire_dedup(now);
        let mut answers = Vec::with_capacity(records.len());
        // A duplicate may point at a record not yet committed: the produce waits for it like
        // for its own.
        let mut wait_for = 0;
        let mut buffered = 0;
        for &r in records {
            let id = r.dedup_id.as_deref();
            if let Some(offset) = id.and_then(|id| a.dedup.get(id).copied()) {
                answers.push((offset, true));
                wait_for = wait_for.max(offset + 1);
                continue;
            }
            let offset = a.next;
            if let Some(id) = id {
                // Into the index at once: a repeat later in the same request is a duplicate.
                let id: Arc<str> = Arc::from(id);
                a.dedup.insert(Arc::clone(&id), offset);
                a.batch_ids.push((now, id));
            }
            a.batch.push(offset, now, r);
            answers.push((offset, false));
            a.next += 1;
            buffered += 1;
        }
        let duplicates = records.len() - buffered;
        if duplicates > 0 {
            inner.duplicates.inc_by(duplicates as u64);
        }
        if buffered > 0 {
            wait_for = a.next;
            if !a.queued_write {
                a.queued_write = true;
                inner
                    .host
                    .schedule_flush(Arc::clone(&self.inner) as Arc<dyn Flush>, true, None);
            }
        }
        // Registered under the append lock, so waiters queue in the order of their ends.
        let committed = inner.commit.wait(wait_for);
        drop(a);
        Ok(Appended { answers, committed })
    }

    /// Reads up to `max_records` committed records from `from`.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let upto = self.readable_end();
        let log = self
            .inner
            .log
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        log.read(from, max_records, max_bytes, upto)
    }

    /// Applies retention: deletes old segments below `min_done` (the lowest offset some group
    /// still needs) while over the size or age limit. Blocking (it deletes files): call it from
    /// `spawn_blocking`.
    pub fn retain(
        &self,
        min_done: u64,
        retention_bytes: u64,
        retention_ms: u64,
    ) -> Result<usize, StorageError> {
        let now = self.inner.host.clock().wall_ms();
        let mut log = self
            .inner
            .log
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let removed = log.delete_front(|end, bytes, last_ts| {
            let over_size = retention_bytes > 0 && bytes > retention_bytes;
            let too_old = retention_ms > 0 && last_ts.saturating_add(retention_ms) < now;
            end <= min_done && (over_size || too_old)
        })?;
        self.inner.store_sizes(&log);
        Ok(removed)
    }

    /// Refuses further appends, then writes and syncs what was buffered, whatever the policy.
    pub fn close(&self) {
        self.inner.lock_appender().closed = true;
        while !self.inner.flush_now(true) {
            // Another thread's flush runs; the final one follows it.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Flush for Inner {
    fn flush(self: Arc<Self>) {
        self.flush_now(false);
    }

    fn would_sync(&self) -> bool {
        self.sync_due(&self.lock_appender())
    }
}

impl Inner {
    fn lock_appender(&self) -> MutexGuard<'_, Appender> {
        self.appender.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the policy wants a sync now: after every write under `always`, once the
    /// interval has passed under `interval`, never under `never` (closing aside).
    fn sync_due(&self, a: &Appender) -> bool {
        match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => {
                self.host.clock().elapsed().saturating_sub(a.last_sync) >= every
            }
            FsyncPolicy::Never => false,
        }
    }

    fn store_sizes(&self, log: &PartitionLog) {
        self.start_offset
            .store(log.start_offset(), Ordering::Release);
        self.size_bytes.store(log.size_bytes(), Ordering::Relaxed);
    }

    /// Writes what is buffered, syncs when the policy says so (or when `final_sync`), moves
    /// the commit point, and queues the partition again for what arrived meanwhile. Returns
    /// false, doing nothing, when another flush of this partition runs.
    fn flush_now(self: &Arc<Self>, final_sync: bool) -> bool {
        let (batch, ids, end) = {
            let mut a = self.lock_appender();
            // The queue entry that called this is used up either way; a flush that runs now
            // queues the partition again for what it leaves behind.
            a.queued_write = false;
            a.queued_sync = false;
            if a.flushing {
                return false;
            }
            a.flushing = true;
            let spare = std::mem::take(&mut a.spare);
            let batch = std::mem::replace(&mut a.batch, spare);
            (batch, std::mem::take(&mut a.batch_ids), a.next)
        };
        let written = self.write(&batch);
        let mut a = self.lock_appender();
        match written {
            Ok(()) => {
                self.produced.inc_by(batch.len() as u64);
                if !batch.is_empty() {
                    self.written.send_replace(end);
                }
                a.unsynced_records += batch.len() as u64;
                a.dedup_order.extend(ids);
                if final_sync || (self.sync_due(&a) && a.unsynced_records > 0) {
                    let records = std::mem::take(&mut a.unsynced_records);
                    a.last_sync = self.host.clock().elapsed();
                    drop(a);
                    self.sync(records);
                    a = self.lock_appender();
                }
                if !self.commit.is_fenced() {
                    self.durable.send_modify(|d| d.end = d.end.max(end));
                    if self.mode == CommitMode::Local {
                        self.commit.advance(end);
                    }
                }
            }
            Err(e) => {
                // Nothing of the batch is in the log (or the partition is fenced): refuse it
                // and everything buffered behind it, whose offsets followed it.
                let behind = std::mem::take(&mut a.batch_ids);
                for (_, id) in ids.iter().chain(&behind) {
                    a.dedup.remove(&**id);
                }
                a.batch.clear();
                a.next = self
                    .log
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .end_offset();
                self.commit.fail_waiting(&e);
                let fenced = self.commit.is_fenced();
                self.durable.send_modify(|d| {
                    d.failures += 1;
                    d.fenced |= fenced;
                });
            }
        }
        let mut spare = batch;
        spare.clear();
        a.spare = spare;
        a.flushing = false;
        self.requeue(&mut a);
        true
    }

    /// Queues the partition for what is left: records buffered during the flush (due at once),
    /// or an `interval` sync (due when the interval has passed since the last).
    fn requeue(self: &Arc<Self>, a: &mut Appender) {
        if a.closed || self.commit.is_fenced() {
            return;
        }
        if !a.batch.is_empty() && !a.queued_write {
            a.queued_write = true;
            self.host
                .schedule_flush(Arc::clone(self) as Arc<dyn Flush>, true, None);
        } else if let FsyncPolicy::Interval(every) = self.policy
            && a.unsynced_records > 0
            && !a.queued_sync
        {
            a.queued_sync = true;
            let due_in = (a.last_sync + every).saturating_sub(self.host.clock().elapsed());
            self.host
                .schedule_flush(Arc::clone(self) as Arc<dyn Flush>, false, Some(due_in));
        }
    }

    /// Writes `batch` into the log (the page cache).
    fn write(&self, batch: &Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut log = self.log.write().unwrap_or_else(PoisonError::into_inner);
        let written = log.write(batch);
        self.store_sizes(&log);
        let poisoned = log.is_poisoned();
        drop(log);
        if let Err(e) = &written {
            // A failed write was undone (the segment is as before), so the partition goes on
            // and a later produce may succeed once the cause (a full disk, say) is gone. Only
            // a write that could not be undone fences it.
            self.metrics.storage_errors.inc();
            if poisoned {
                tracing::error!(partition = %self.name, error = %e, "a failed write could not be undone: the partition stops taking writes until the broker restarts");
                self.commit.fence();
            } else {
                tracing::error!(partition = %self.name, error = %e, "write failed; nothing was written");
            }
        }
        written
    }

    /// Syncs every file written since the last sync; a failure fences the partition.
    fn sync(&self, records: u64) {
        let files = self
            .log
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take_unsynced();
        if files.is_empty() || crate::planted::strikes(crate::planted::Planted::SkipSync, 5) {
            return;
        }
        let started = Instant::now();
        for u in &files {
            if let Err(e) = u.file.sync_data() {
                let e = StorageError::io("fdatasync", &u.path, e);
                self.metrics.storage_errors.inc();
                tracing::error!(partition = %self.name, error = %e, "sync failed: the records written since the last sync are cut and the partition stops taking writes until the broker restarts");
                self.commit.fence();
                self.durable.send_modify(|d| d.fenced = true);
                let mut log = self.log.write().unwrap_or_else(PoisonError::into_inner);
                log.sync_failed(&files);
                self.store_sizes(&log);
                return;
            }
        }
        self.log
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .synced(&files);
        self.metrics
            .fsync_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.fsync_batch_records.observe(records as f64);
    }
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
