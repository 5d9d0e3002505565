//! When partitions write and sync what producers appended: once per turn of the event loop.
//!
//! An append only numbers and buffers records and queues its partition here. The first of two
//! things then flushes it (writes the buffer, syncs under `--fsync always`, moves the commit
//! point):
//! - [`sync_on_park`], the runtime's park hook: a worker thread that ran out of tasks flushes
//!   every queued partition before it sleeps, the way Redis writes and syncs its AOF before its
//!   event loop waits. By then every request that was ready has been read and appended, so one
//!   write and one sync cover them all, and no thread hand-off or wake-up is paid per request.
//! - the sync thread, a safety net for runtimes without the hook or too busy to park: it
//!   flushes a partition that has waited [`TICK`]. It also runs `--fsync interval`'s syncs, when
//!   a partition's interval has passed.
//!
//! A flush that syncs runs on a helper thread, never on a runtime worker: a slow sync then
//! delays only its own partition's producers, and syncs of several partitions overlap on the
//! device (four took about half as long side by side as one after another here). A flush that
//! only writes into the page cache runs on the thread that found it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Longest a queued write waits when no runtime thread parks: the sync thread's safety net.
pub const TICK: Duration = Duration::from_millis(1);
/// After this long with nothing queued, the sync thread stops ticking and sleeps until woken.
const IDLE: Duration = Duration::from_millis(100);
/// Helper threads that run syncs, side by side.
const HELPER_THREADS: usize = 8;

/// Something the sync queue flushes: a partition.
pub trait Flush: Send + Sync + std::fmt::Debug {
    /// Writes what is buffered, syncs what the policy says is due, moves the commit point, and
    /// queues itself again for whatever is left.
    fn flush(self: Arc<Self>);

    /// Whether a flush now would wait for the device (sync), rather than only write into the
    /// page cache: only such flushes gain from running side by side.
    fn would_sync(&self) -> bool;
}

struct Entry {
    due: Instant,
    /// A write is waiting: the park hook flushes it whatever `due` says.
    urgent: bool,
    part: Arc<dyn Flush>,
}

/// Queues `part` for a flush: a write (`urgent`, due within [`TICK`]), or a sync due at `due`.
pub fn schedule(part: Arc<dyn Flush>, urgent: bool, due: Option<Instant>) {
    let due = due.unwrap_or_else(|| Instant::now() + TICK);
    queue().push(Entry { due, urgent, part });
}

/// The runtime park hook: flushes every partition with a write waiting (and any whose `interval`
/// sync is due) before the thread sleeps: writes on this thread, syncs on helper threads.
/// Install it on every runtime that serves a broker:
/// `Builder::on_thread_park(broker::sync_on_park)`. Without it a produce waits up to [`TICK`]
/// longer for its acknowledgement.
pub fn sync_on_park() {
    let q = queue();
    if !q.busy.load(Ordering::Acquire) {
        return;
    }
    let now = Instant::now();
    let parts = q.take(|e| e.urgent || e.due <= now);
    flush_all(parts);
}

/// Flushes `parts`: those that only write, on this thread; those that sync, side by side on
/// helper threads, so that no runtime worker ever waits for the device (a slow sync then delays
/// only its own partition's producers).
fn flush_all(parts: Vec<Arc<dyn Flush>>) {
    let (syncing, writing): (Vec<_>, Vec<_>) = parts.into_iter().partition(|p| p.would_sync());
    if !syncing.is_empty() {
        helpers().give(syncing);
    }
    for part in writing {
        part.flush();
    }
}

/// The process's partitions waiting for a flush, and the sync thread that watches them.
struct SyncQueue {
    state: Mutex<QueueState>,
    wake: Condvar,
    /// Whether `entries` may be non-empty: the park hook's lock-free early exit.
    busy: AtomicBool,
}

#[derive(Default)]
struct QueueState {
    entries: Vec<Entry>,
    /// When the sync thread looks at the queue next on its own; `None`: not before a push
    /// wakes it. A push due earlier wakes it.
    thread_wakes_at: Option<Instant>,
}

fn queue() -> &'static SyncQueue {
    static QUEUE: OnceLock<SyncQueue> = OnceLock::new();
    QUEUE.get_or_init(|| {
        // The thread waits for this initialisation to finish before it looks at the queue.
        let spawned = std::thread::Builder::new()
            .name("broker-sync".into())
            .spawn(|| queue().run());
        if let Err(e) = spawned {
            // The park hook still flushes; only its safety net is missing.
            tracing::error!(error = %e, "cannot start the sync thread");
        }
        SyncQueue {
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
            busy: AtomicBool::new(false),
        }
    })
}

/// Starts the sync thread and the helpers, once per process. `Broker::open` calls it, so that
/// they start from a thread that is not a runtime worker: a thread inherits its creator's CPU
/// set, and a pinned worker's would hold them to one CPU.
pub fn start() {
    queue();
    helpers();
}

impl SyncQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, entry: Entry) {
        let due = entry.due;
        let mut st = self.lock();
        st.entries.push(entry);
        self.busy.store(true, Ordering::Release);
        if st.thread_wakes_at.is_none_or(|at| due < at) {
            self.wake.notify_one();
        }
    }

    /// Takes the entries `take` chooses.
    fn take(&self, take: impl Fn(&Entry) -> bool) -> Vec<Arc<dyn Flush>> {
        let mut st = self.lock();
        self.take_locked(&mut st, take)
    }

    fn take_locked(
        &self,
        st: &mut QueueState,
        take: impl Fn(&Entry) -> bool,
    ) -> Vec<Arc<dyn Flush>> {
        let mut taken = Vec::new();
        st.entries.retain(|e| {
            if take(e) {
                taken.push(Arc::clone(&e.part));
                false
            } else {
                true
            }
        });
        self.busy.store(!st.entries.is_empty(), Ordering::Release);
        taken
    }

    /// The sync thread: flushes partitions whose time is due.
    fn run(&self) {
        let mut last_busy = Instant::now();
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let due = self.take_locked(&mut st, |e| e.due <= now);
            if !due.is_empty() {
                // Busy, and looks at the queue again right after: no push needs to wake it.
                st.thread_wakes_at = Some(now);
                drop(st);
                flush_all(due);
                st = self.lock();
                continue;
            }
            let wait = if let Some(next) = st.entries.iter().map(|e| e.due).min() {
                last_busy = now;
                Some(next.saturating_duration_since(now))
            } else if now.duration_since(last_busy) < IDLE {
                // Recently busy: tick rather than be woken by the next push, which would cost
                // the producing thread a wake-up per flush.
                Some(TICK)
            } else {
                None
            };
            st.thread_wakes_at = wait.map(|w| now + w);
            st = match wait {
                Some(w) => {
                    self.wake
                        .wait_timeout(st, w)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self.wake.wait(st).unwrap_or_else(PoisonError::into_inner),
            };
            if wait.is_none() {
                last_busy = Instant::now();
            }
        }
    }
}

/// Threads that flush the partitions handed to them.
struct Helpers {
    state: Mutex<HelpersState>,
    wake: Condvar,
}

#[derive(Default)]
struct HelpersState {
    jobs: VecDeque<Arc<dyn Flush>>,
    /// Helpers waiting for a job, and how many of them were woken and have not run yet.
    idle: usize,
    woken: usize,
}

fn helpers() -> &'static Helpers {
    static HELPERS: OnceLock<Helpers> = OnceLock::new();
    HELPERS.get_or_init(|| {
        for _ in 0..HELPER_THREADS {
            let spawned = std::thread::Builder::new()
                .name("broker-sync-helper".into())
                .spawn(|| helpers().run());
            if let Err(e) = spawned {
                // Fewer syncs side by side; a job waits for a helper that runs.
                tracing::error!(error = %e, "cannot start a sync helper thread");
                break;
            }
        }
        Helpers {
            state: Mutex::new(HelpersState::default()),
            wake: Condvar::new(),
        }
    })
}

impl Helpers {
    fn lock(&self) -> MutexGuard<'_, HelpersState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn give(&self, parts: Vec<Arc<dyn Flush>>) {
        let mut st = self.lock();
        for part in parts {
            st.jobs.push_back(part);
            if st.idle > st.woken {
                st.woken += 1;
                self.wake.notify_one();
            }
        }
    }

    fn run(&self) {
        let mut st = self.lock();
        loop {
            if let Some(part) = st.jobs.pop_front() {
                drop(st);
                part.flush();
                st = self.lock();
                continue;
            }
            st.idle += 1;
            st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.idle -= 1;
            st.woken = st.woken.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::ThreadId;

    /// Records on which threads it was flushed.
    #[derive(Debug, Default)]
    struct Probe {
        syncs: bool,
        flushed_on: Mutex<Vec<ThreadId>>,
    }

    impl Flush for Probe {
        fn flush(self: Arc<Self>) {
            self.flushed_on
                .lock()
                .unwrap()
                .push(std::thread::current().id());
        }

        fn would_sync(&self) -> bool {
            self.syncs
        }
    }

    fn probe(syncs: bool) -> Arc<Probe> {
        Arc::new(Probe {
            syncs,
            ..Probe::default()
        })
    }

    fn flushes(p: &Probe) -> Vec<ThreadId> {
        p.flushed_on.lock().unwrap().clone()
    }

    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // One test calls the park hook: the queue is the process's, and a second caller running
    // beside it could take this test's entries.
    #[test]
    fn the_park_hook_writes_on_its_own_thread_and_hands_syncs_to_helpers() {
        let far = Some(Instant::now() + Duration::from_secs(3600));
        let me = std::thread::current().id();

        // Urgent, due far away: the sync thread leaves it, the hook takes it, right here.
        let write = probe(false);
        schedule(Arc::clone(&write) as Arc<dyn Flush>, true, far);
        sync_on_park();
        assert_eq!(flushes(&write), [me]);

        // A sync not yet due stays queued.
        let later = probe(true);
        schedule(Arc::clone(&later) as Arc<dyn Flush>, false, far);
        sync_on_park();
        assert!(flushes(&later).is_empty(), "a sync before its time");

        // Three syncs: all on helpers, side by side; the parking thread never waits for the
        // device.
        let syncs: Vec<_> = (0..3).map(|_| probe(true)).collect();
        for p in &syncs {
            schedule(Arc::clone(p) as Arc<dyn Flush>, true, far);
        }
        sync_on_park();
        wait_for("three syncs", || {
            syncs.iter().all(|p| flushes(p).len() == 1)
        });
        let threads: std::collections::HashSet<ThreadId> =
            syncs.iter().flat_map(|p| flushes(p)).collect();
        assert!(!threads.contains(&me), "a sync on the parking thread");
    }

    #[test]
    fn without_a_park_hook_the_sync_thread_flushes_within_a_tick() {
        let p = probe(false);
        schedule(Arc::clone(&p) as Arc<dyn Flush>, true, None);
        wait_for("the sync thread", || flushes(&p).len() == 1);
        std::thread::sleep(TICK * 5);
        assert_eq!(flushes(&p).len(), 1, "flushed once");
    }

    #[test]
    fn an_earlier_entry_wakes_a_sync_thread_waiting_for_a_later_one() {
        let late = probe(false);
        schedule(
            Arc::clone(&late) as Arc<dyn Flush>,
            false,
            Some(Instant::now() + Duration::from_secs(3600)),
        );
        // Let the sync thread settle into its wait for the late entry.
        std::thread::sleep(Duration::from_millis(20));
        let soon = probe(false);
        schedule(
            Arc::clone(&soon) as Arc<dyn Flush>,
            false,
            Some(Instant::now() + Duration::from_millis(5)),
        );
        wait_for("the earlier entry", || flushes(&soon).len() == 1);
        assert!(flushes(&late).is_empty());
    }
}
