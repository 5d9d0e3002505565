//! One partition's replica on this broker: its promise and labels on disk, and what it does
//! with the replication requests of `crate::replication::replica`'s protocol.
//!
//! Everything that changes the replica (a promise, a cut, new labels, records from the
//! leader or copied during recovery) happens under one async lock, in the order the
//! protocol's plan gives (promise, cut, labels, records), and an answer goes out only once
//! what it says is on disk. The log end a replica reports is its *durable* end.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use crate::engine::Topic;
use crate::engine::partition::Partition;
use crate::protocol::peer::{LogState, PeerAnswer, ReplicatedRecords};
use crate::replication::epochs::{Epoch, EpochHistory};
use crate::replication::replica::{
    Append, AppendPlan, PromisePlan, Promised, ReplicaState, Restart, copy_of, labels, on_append,
    on_promise,
};
use crate::replication::store;
use crate::storage::{Disk, StorageError, StoredRecord};

/// Most bytes of records in one replication request or answer.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Most records in one replication request or answer.
pub const MAX_BATCH_RECORDS: u64 = 4096;

/// The promise, the labels and whether the replica is catching up, as on disk.
pub type Meta = store::Stored;

/// A partition's replica here.
#[derive(Debug)]
pub struct Replica {
    topic: Arc<Topic>,
    index: usize,
    dir: PathBuf,
    disk: Arc<dyn Disk>,
    meta: Mutex<Meta>,
}

/// Why a replica could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Its disk failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Its broker joined on a new disk and this replica has not yet held its leader's commit
    /// point: it may lack committed records, so it gives no promise and no records.
    #[error(
        "{0} is catching up after its broker joined on a new disk: it does not count towards a majority yet"
    )]
    CatchingUp(String),
    /// The request made no sense for this replica.
    #[error("{0}")]
    Invalid(String),
}

impl Replica {
    /// The replica of partition `index` of `topic`, whose files are in `dir`. On a broker
    /// that joined on a new disk (`joined`: the epoch it learned then), a replica without files
    /// has promised that epoch and is catching up.
    ///
    /// # Errors
    /// When the topic has no such partition, or its `replica.json` cannot be read or written.
    pub fn open(
        topic: Arc<Topic>,
        index: usize,
        dir: PathBuf,
        disk: Arc<dyn Disk>,
        joined: Option<Epoch>,
    ) -> Result<Self, StorageError> {
        if topic.partitions().get(index).is_none() {
            return Err(StorageError::Corrupt {
                offset: 0,
                path: dir,
                reason: format!("topic {} has no partition {index}", topic.name()),
            });
        }
        let meta = match (store::load(&*disk, &dir)?, joined) {
            (Some(stored), _) => stored,
            (None, None) => Meta::default(),
            (None, Some(epoch)) => {
                let meta = Meta {
                    promised: epoch,
                    history: EpochHistory::default(),
                    catching_up: true,
                };
                store::save(&*disk, &dir, &meta)?;
                meta
            }
        };
        Ok(Self {
            topic,
            index,
            dir,
            disk,
            meta: Mutex::new(meta),
        })
    }

    /// The partition.
    pub fn partition(&self) -> &Partition {
        self.topic
            .partitions()
            .get(self.index)
            .expect("a replica is opened only for a partition its topic has (checked in open)")
    }

    /// Its topic's name.
    pub fn topic_name(&self) -> &str {
        self.topic.name()
    }

    /// Its partition number.
    pub fn index(&self) -> u32 {
        u32::try_from(self.index).unwrap_or(u32::MAX)
    }

    /// Holds the replica while a leader reads or changes it.
    pub async fn lock(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().await
    }

    /// The protocol's view of this replica with `meta`: its durable end.
    pub fn state(&self, meta: &Meta) -> ReplicaState {
        let part = self.partition();
        ReplicaState {
            promised: meta.promised,
            history: meta.history.clone(),
            log_start: part.start_offset(),
            end: part.durable().borrow().end,
        }
    }

    /// The protocol's view with the records written here but perhaps not yet durable: what a
    /// leader may send.
    pub fn written_state(&self, meta: &Meta) -> ReplicaState {
        let mut s = self.state(meta);
        s.end = self.partition().written_end();
        s
    }

    fn save(&self, meta: &Meta) -> Result<(), StorageError> {
        store::save(&*self.disk, &self.dir, meta)
    }

    /// What this replica tells a new leader of its log.
    pub fn log_state(&self, meta: &Meta) -> LogState {
        let p = Promised::of(&self.state(meta));
        LogState {
            epochs: p.history.entries().to_vec(),
            log_start: p.log_start,
            end: p.end,
        }
    }

    /// A leader of `epoch` asks for a promise.
    ///
    /// # Errors
    /// When the promise cannot be written.
    pub async fn promise(&self, epoch: Epoch) -> Result<PeerAnswer, ReplicaError> {
        let mut meta = self.meta.lock().await;
        self.check_caught_up(&meta)?;
        match on_promise(&self.state(&meta), epoch) {
            PromisePlan::Stale { promised } => Ok(PeerAnswer::Stale { promised }),
            PromisePlan::Promise { promise } => {
                if let Some(p) = promise {
                    meta.promised = p;
                    self.save(&meta)?;
                }
                Ok(PeerAnswer::Promised(self.log_state(&meta)))
            }
        }
    }

    /// Records from the leader of `epoch` (or copied from another replica during recovery):
    /// takes them as the protocol says and answers.
    ///
    /// # Errors
    /// When the disk fails, or the records do not match their description.
    pub async fn replicate(
        &self,
        epoch: Epoch,
        commit: u64,
        records: ReplicatedRecords,
    ) -> Result<PeerAnswer, ReplicaError> {
        let mut meta = self.meta.lock().await;
        let answer = self.apply(&mut meta, epoch, commit, records).await?;
        if meta.catching_up
            && let PeerAnswer::Appended { matched } = answer
            && matched >= commit
        {
            // It holds every record committed when the leader sent this: from now on it is a
            // follower like any other.
            meta.catching_up = false;
            self.save(&meta)?;
            tracing::info!(
                topic = self.topic.name(),
                partition = self.index,
                "caught up with the leader's commit point: counts towards a majority again"
            );
        }
        Ok(answer)
    }

    fn check_caught_up(&self, meta: &Meta) -> Result<(), ReplicaError> {
        if meta.catching_up {
            return Err(ReplicaError::CatchingUp(format!(
                "{}/{}",
                self.topic.name(),
                self.index
            )));
        }
        Ok(())
    }

    /// Whether this replica is still catching up after its broker joined on a new disk.
    pub async fn is_catching_up(&self) -> bool {
        self.meta.lock().await.catching_up
    }

    /// [`Replica::replicate`] with the lock held (recovery holds it across its copies).
    ///
    /// # Errors
    /// As [`Replica::replicate`].
    pub async fn apply(
        &self,
        meta: &mut Meta,
        epoch: Epoch,
        commit: u64,
        records: ReplicatedRecords,
    ) -> Result<PeerAnswer, ReplicaError> {
        let count = records.records.len() as u64;
        let append = Append {
            epoch,
            start: records.start,
            prev_epoch: records.prev_epoch,
            log_start: records.log_start,
            epochs: records.epochs,
            count,
        };
        let apply = match on_append(&self.state(meta), &append) {
            AppendPlan::Restart(r) => {
                return self.restart(meta, commit, r, records.records).await;
            }
            AppendPlan::Stale { promised } => return Ok(PeerAnswer::Stale { promised }),
            AppendPlan::Mismatch { promise } => {
                if let Some(p) = promise {
                    meta.promised = p;
                    self.save(meta)?;
                }
                return Ok(PeerAnswer::Mismatch(self.log_state(meta)));
            }
            AppendPlan::Apply(a) => a,
        };
        if let Some(p) = apply.promise {
            meta.promised = p;
            self.save(meta)?;
        }
        let part = self.partition();
        if let Some(to) = apply.truncate_to {
            let cut = self.truncate(to).await?;
            tracing::info!(
                topic = self.topic.name(),
                partition = self.index,
                to,
                records = cut,
                "cut a divergent tail"
            );
        }
        if let Some(h) = apply.history {
            meta.history = h;
            self.save(meta)?;
        }
        let skip =
            usize::try_from(apply.append_from.saturating_sub(append.start)).unwrap_or(usize::MAX);
        let new: Vec<StoredRecord> = records.records.into_iter().skip(skip).collect();
        self.append_durably(&new).await?;
        // Below what agrees with the leader, its commit point is this replica's too.
        part.advance_commit(commit.min(apply.matched));
        Ok(PeerAnswer::Appended {
            matched: apply.matched,
        })
    }

    /// Starts this log again at the sender's log start, in the order `restart` gives, and
    /// takes the records: the sender holds nothing below its start, and this log lacks (or
    /// disagrees on) what lies just below it.
    async fn restart(
        &self,
        meta: &mut Meta,
        commit: u64,
        restart: Restart,
        records: Vec<StoredRecord>,
    ) -> Result<PeerAnswer, ReplicaError> {
        if let Some(p) = restart.promise {
            meta.promised = p;
            self.save(meta)?;
        }
        let held = self.blocking(Partition::clear).await?;
        meta.history = restart.history;
        self.save(meta)?;
        let start = restart.start;
        self.blocking(move |p| p.restart_at(start)).await?;
        self.topic.start_moved(self.partition());
        tracing::warn!(
            topic = self.topic.name(),
            partition = self.index,
            start,
            dropped = held,
            "the leader's log starts past this one's end (its retention deleted what this replica lacks): started the log again at the leader's start"
        );
        self.append_durably(&records).await?;
        self.partition().advance_commit(commit.min(restart.matched));
        Ok(PeerAnswer::Appended {
            matched: restart.matched,
        })
    }

    /// Appends records that continue the log and waits until they are durable.
    async fn append_durably(&self, records: &[StoredRecord]) -> Result<(), ReplicaError> {
        if records.is_empty() {
            return Ok(());
        }
        let part = self.partition();
        let mut durable = part.durable();
        let failures = durable.borrow().failures;
        let upto = part.append_replicated(records)?;
        let reached = durable
            .wait_for(|d| d.end >= upto || d.failures != failures || d.fenced)
            .await
            .map_err(|_| StorageError::Closed)?;
        if reached.end < upto {
            return Err(ReplicaError::Storage(if reached.fenced {
                StorageError::Fenced
            } else {
                StorageError::Closed
            }));
        }
        Ok(())
    }

    /// Cuts the log to `to` (on a blocking thread).
    async fn truncate(&self, to: u64) -> Result<u64, StorageError> {
        self.blocking(move |p| p.truncate_to(to)).await
    }

    /// Runs `f` on the partition on a blocking thread (it changes files).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Partition) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let topic = Arc::clone(&self.topic);
        let index = self.index;
        tokio::task::spawn_blocking(move || {
            topic
                .partitions()
                .get(index)
                .map_or(Err(StorageError::Closed), f)
        })
        .await
        .map_err(|_| StorageError::Closed)?
    }

    /// Cuts this replica's log to `to` with the lock held (a recovering leader's divergent
    /// tail).
    ///
    /// # Errors
    /// When the cut fails.
    pub async fn cut(&self, _meta: &mut Meta, to: u64) -> Result<u64, StorageError> {
        self.truncate(to).await
    }

    /// Records of this log from `from`, for a recovering leader of `epoch`.
    ///
    /// # Errors
    /// When they cannot be read.
    pub async fn read(
        &self,
        epoch: Epoch,
        from: u64,
        max_records: u32,
    ) -> Result<PeerAnswer, ReplicaError> {
        let meta = self.meta.lock().await;
        self.check_caught_up(&meta)?;
        if meta.promised > epoch {
            return Ok(PeerAnswer::Stale {
                promised: meta.promised,
            });
        }
        let state = self.state(&meta);
        Ok(PeerAnswer::Records(self.records(
            &state,
            epoch,
            from,
            u64::from(max_records).min(MAX_BATCH_RECORDS),
        )?))
    }

    /// The records `[from, from + max)` of a log in `state`, with their labels.
    ///
    /// # Errors
    /// When they cannot be read.
    pub fn records(
        &self,
        state: &ReplicaState,
        epoch: Epoch,
        from: u64,
        max: u64,
    ) -> Result<ReplicatedRecords, StorageError> {
        let copy = copy_of(state, epoch, from, max);
        let mut records = if copy.count == 0 {
            Vec::new()
        } else {
            self.partition().read_written(
                copy.start,
                usize::try_from(copy.count).unwrap_or(usize::MAX),
                MAX_BATCH_BYTES,
            )?
        };
        records.truncate(usize::try_from(copy.count).unwrap_or(usize::MAX));
        // A byte limit may have cut the batch short: its labels stop where it does.
        let end = copy.start + records.len() as u64;
        Ok(ReplicatedRecords {
            start: copy.start,
            prev_epoch: copy.prev_epoch,
            log_start: copy.log_start,
            epochs: labels(state, copy.start, end),
            records,
        })
    }

    /// Starts `epoch` at this replica's end (a leader that recovered): adds its entry.
    ///
    /// # Errors
    /// When the epoch does not follow the labels, or they cannot be written.
    pub fn begin_epoch(&self, meta: &mut Meta, epoch: Epoch) -> Result<u64, ReplicaError> {
        let end = self.state(meta).end;
        meta.history = meta
            .history
            .begin(epoch, end)
            .map_err(ReplicaError::Invalid)?;
        meta.promised = meta.promised.max(epoch);
        self.save(meta)?;
        Ok(end)
    }

    /// Promises `epoch` here (the leader's own promise).
    ///
    /// # Errors
    /// When this replica promised a later epoch, or the promise cannot be written.
    pub fn promise_own(&self, meta: &mut Meta, epoch: Epoch) -> Result<(), ReplicaError> {
        self.check_caught_up(meta)?;
        if meta.promised > epoch {
            return Err(ReplicaError::Invalid(format!(
                "epoch {epoch} is older than the promise {}",
                meta.promised
            )));
        }
        if meta.promised < epoch {
            meta.promised = epoch;
            self.save(meta)?;
        }
        Ok(())
    }
}
