//! What the engine runs on: a disk, a clock, and something that runs its background I/O.
//!
//! [`Host::os`] is production: the OS's files, the system clock, the sync queue's threads
//! (`syncer`), a thread per group journal, and `spawn_blocking` for file work a request waits
//! for. A [`Host::stepped`] host is the simulator's: its disk and clock are the simulator's, and
//! nothing runs in the background. Flushes and journal writes wait in [`Steps`] until the
//! simulator runs them, in an order its seed picks, so a run replays exactly.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::syncer::{self, Flush};
use crate::storage::{Disk, OsDisk};

/// Time as the engine reads it.
pub trait Clock: Send + Sync + Debug {
    /// Monotonic time since the clock started: leases, retry delays, sync intervals.
    fn elapsed(&self) -> Duration;
    /// Milliseconds since the Unix epoch: record timestamps, retention by age, dedup windows.
    fn wall_ms(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn wall_ms(&self) -> u64 {
        crate::storage::now_ms()
    }
}

/// Background work a stepped host holds for the simulator to run.
pub trait Step: Send + Sync + Debug {
    /// Runs what is queued (a journal: writes, and syncs per its policy, what was persisted).
    fn step(&self);
}

/// A flush waiting in a stepped host.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// The partition.
    pub part: Arc<dyn Flush>,
    /// A write is waiting (else an `interval` sync).
    pub urgent: bool,
    /// When the sync queue would run it, on the host's clock.
    pub due: Duration,
}

/// The queues of a stepped host.
#[derive(Debug, Default)]
pub struct Steps {
    flushes: Mutex<Vec<Scheduled>>,
    journals: Mutex<Vec<Arc<dyn Step>>>,
}

impl Steps {
    /// Takes every flush queued so far.
    pub fn take_flushes(&self) -> Vec<Scheduled> {
        std::mem::take(&mut *self.flushes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts back flushes taken but not run, ahead of any queued since.
    pub fn put_back(&self, mut flushes: Vec<Scheduled>) {
        let mut queued = self.flushes.lock().unwrap_or_else(PoisonError::into_inner);
        flushes.append(&mut queued);
        *queued = flushes;
    }

    /// Every journal opened on this host, in the order they were opened.
    pub fn journals(&self) -> Vec<Arc<dyn Step>> {
        self.journals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The disk, the clock and the way background work runs.
#[derive(Debug)]
pub struct Host {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    /// The simulator's queues, which it owns: what they hold (partitions, journals) holds this
    /// host, so a strong reference here would make a cycle that outlives the run.
    steps: Option<Weak<Steps>>,
}

impl Host {
    /// Production: the OS, the system clock and threads.
    pub fn os() -> Arc<Self> {
        Arc::new(Self {
            disk: OsDisk::shared(),
            clock: Arc::new(SystemClock {
                start: Instant::now(),
            }),
            steps: None,
        })
    }

    /// The simulator's: nothing runs until it is taken from `steps` and run. Once the
    /// simulator drops `steps`, what would be queued is dropped.
    pub fn stepped(disk: Arc<dyn Disk>, clock: Arc<dyn Clock>, steps: &Arc<Steps>) -> Arc<Self> {
        Arc::new(Self {
            disk,
            clock,
            steps: Some(Arc::downgrade(steps)),
        })
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Whether background work waits for the simulator (no threads are started).
    pub fn is_stepped(&self) -> bool {
        self.steps.is_some()
    }

    /// Queues a partition's flush: `urgent` when records wait, due after `due_in` (default:
    /// the sync queue's tick).
    pub fn schedule_flush(&self, part: Arc<dyn Flush>, urgent: bool, due_in: Option<Duration>) {
        let due_in = due_in.unwrap_or(syncer::TICK);
        match &self.steps {
            None => syncer::schedule(part, urgent, Some(Instant::now() + due_in)),
            Some(steps) => {
                if let Some(steps) = steps.upgrade() {
                    steps
                        .flushes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Scheduled {
                            part,
                            urgent,
                            due: self.clock.elapsed() + due_in,
                        });
                }
            }
        }
    }

    /// Registers a journal that a stepped host's simulator runs.
    pub fn add_journal(&self, journal: Arc<dyn Step>) {
        if let Some(steps) = self.steps.as_ref().and_then(Weak::upgrade) {
            steps
                .journals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(journal);
        }
    }

    /// Runs blocking file work: on tokio's blocking pool in production, in place on a stepped
    /// host. `None` when the runtime is shutting down.
    pub async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        if self.steps.is_some() {
            Some(work())
        } else {
            tokio::task::spawn_blocking(work).await.ok()
        }
    }
}
