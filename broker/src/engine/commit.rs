//! A partition's commit point: how far its records are as durable as the fsync policy promises,
//! and the produces waiting to get there.
//!
//! Records get their offsets when the producing connection appends them; they are *committed*
//! once they are durable by the policy, and only committed records are read by consumers or
//! acknowledged to producers. This is the one place where a produce waits. One input moves it
//! today: the partition's sync thread after the `fdatasync` that covered the records (under
//! `--fsync always`), or the append itself (under `interval` and `never`). A replicated
//! partition adds its followers' acknowledgements here: the commit point becomes the end that a
//! majority holds on disk, and nothing else in the produce path changes.
//!
//! Invariants:
//! 1. `end` only moves forward.
//! 2. A waiter is answered `Ok` only once `end` has reached the end it waits for; once the
//!    commit point is fenced every waiter, present and future, is answered `Fenced`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, oneshot};

use crate::storage::StorageError;

/// What a produce waits on: `Ok` once committed, the error if its records were not written, or
/// `Fenced` if the partition stopped first.
pub type Waiter = oneshot::Receiver<Result<(), StorageError>>;
type Answer = oneshot::Sender<Result<(), StorageError>>;

/// What [`Commit::wait`] gives.
#[derive(Debug)]
pub enum Wait {
    /// Already committed.
    Done,
    /// Not yet: the receiver resolves when it is (or the partition is fenced).
    Pending(Waiter),
    /// The partition is fenced: it will never be.
    Fenced,
}

/// A partition's commit point.
#[derive(Debug)]
pub struct Commit {
    end: AtomicU64,
    fenced: AtomicBool,
    /// Waiters in the order of the ends they wait for (they register under the partition's
    /// append lock, so ends only grow along the queue).
    waiters: Mutex<VecDeque<(u64, Answer)>>,
    /// Woken when `end` moves: the topic's consumers waiting for records.
    readers: Arc<Notify>,
}

impl Commit {
    /// A commit point at `end` (what recovery found: on disk, so committed).
    pub fn new(end: u64, readers: Arc<Notify>) -> Self {
        Self {
            end: AtomicU64::new(end),
            fenced: AtomicBool::new(false),
            waiters: Mutex::new(VecDeque::new()),
            readers,
        }
    }

    /// Records below this offset are committed: readable and acknowledged.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Whether a failed write or sync stopped the partition.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Waits until every record below `upto` is committed.
    pub fn wait(&self, upto: u64) -> Wait {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_fenced() {
            return Wait::Fenced;
        }
        if self.end() >= upto {
            return Wait::Done;
        }
        let (tx, rx) = oneshot::channel();
        waiters.push_back((upto, tx));
        Wait::Pending(rx)
    }

    /// Moves the commit point to `to` (never back) and answers the waiters it reached.
    pub fn advance(&self, to: u64) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        let before = self.end.fetch_max(to, Ordering::AcqRel);
        if before >= to {
            // Nothing new (a flush that wrote nothing): no waiter or reader to wake.
            return;
        }
        let end = to;
        while waiters.front().is_some_and(|(upto, _)| *upto <= end) {
            if let Some((_, tx)) = waiters.pop_front() {
                let _ = tx.send(Ok(()));
            }
        }
        drop(waiters);
        self.readers.notify_waiters();
    }

    /// Answers every waiter with `e`: the records they wait for were not written, and will not
    /// be (their offsets are given again).
    pub fn fail_waiting(&self, e: &StorageError) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, tx) in waiters.drain(..) {
            let _ = tx.send(Err(e.duplicate()));
        }
    }

    /// Stops the commit point for good: what reached the disk is unknown. Every waiter is
    /// answered `Fenced`, now and from now on.
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::Release);
        self.fail_waiting(&StorageError::Fenced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(end: u64) -> Commit {
        Commit::new(end, Arc::new(Notify::new()))
    }

    fn pending(w: Wait) -> Waiter {
        match w {
            Wait::Pending(rx) => rx,
            other => panic!("expected a pending wait, got {other:?}"),
        }
    }

    #[test]
    fn what_recovery_found_is_committed() {
        let c = commit(10);
        assert!(matches!(c.wait(10), Wait::Done));
        assert!(matches!(c.wait(0), Wait::Done));
        assert!(matches!(c.wait(11), Wait::Pending(_)));
    }

    #[test]
    fn a_waiter_is_answered_only_once_the_end_reaches_it() {
        let c = commit(0);
        let mut a = pending(c.wait(5));
        let mut b = pending(c.wait(9));
        c.advance(4);
        assert!(a.try_recv().is_err(), "4 does not cover 5");
        c.advance(5);
        assert!(matches!(a.try_recv(), Ok(Ok(()))));
        assert!(b.try_recv().is_err());
        c.advance(20);
        assert!(matches!(b.try_recv(), Ok(Ok(()))));
        assert_eq!(c.end(), 20);
    }

    #[test]
    fn the_end_never_moves_back() {
        let c = commit(0);
        c.advance(8);
        c.advance(3);
        assert_eq!(c.end(), 8);
        assert!(matches!(c.wait(8), Wait::Done));
    }

    #[test]
    fn fencing_answers_every_waiter_false_now_and_later() {
        let c = commit(0);
        let mut a = pending(c.wait(1));
        c.fence();
        assert!(matches!(a.try_recv(), Ok(Err(StorageError::Fenced))));
        assert!(matches!(c.wait(1), Wait::Fenced));
        assert!(matches!(c.wait(0), Wait::Fenced));
        assert!(c.is_fenced());
    }

    #[test]
    fn a_failed_write_answers_its_waiters_with_the_error_and_the_commit_point_goes_on() {
        let c = commit(3);
        let mut a = pending(c.wait(4));
        let mut b = pending(c.wait(6));
        c.fail_waiting(&StorageError::Closed);
        assert!(matches!(a.try_recv(), Ok(Err(StorageError::Closed))));
        assert!(matches!(b.try_recv(), Ok(Err(StorageError::Closed))));
        assert!(!c.is_fenced());
        let mut again = pending(c.wait(4));
        c.advance(4);
        assert!(matches!(again.try_recv(), Ok(Ok(()))));
    }

    #[tokio::test]
    async fn advancing_wakes_waiting_readers() {
        let readers = Arc::new(Notify::new());
        let c = Commit::new(0, Arc::clone(&readers));
        let woke = readers.notified();
        tokio::pin!(woke);
        woke.as_mut().enable();
        c.advance(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), woke)
            .await
            .expect("advance wakes readers");
    }
}
