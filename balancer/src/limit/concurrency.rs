//! The per-backend concurrency cap with a bounded FIFO wait queue.
//!
//! At most `max_in_flight` requests run on a backend; the next `max_queue` wait in arrival
//! order (tokio's semaphore hands a released permit to the oldest waiter, and `try_acquire`
//! never overtakes a waiter); anything beyond is refused at once, and a waiter that reaches
//! the queue timeout gives up. Both refusals become 503 with `Retry-After`. This is what turns
//! an on-sale stampede into an orderly line instead of a pile of timeouts at the backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The wait queue already holds `max_queue` requests.
    #[error("wait queue full")]
    Full,
    /// The request waited `queue_timeout` without a turn.
    #[error("timed out in the wait queue")]
    Timeout,
}

/// Admission ticket: running on the backend; dropping it lets the next waiter in.
#[derive(Debug)]
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
}

/// The cap and queue of one backend.
#[derive(Debug)]
pub struct ConcurrencyGate {
    permits: Option<Arc<Semaphore>>,
    max_in_flight: usize,
    max_queue: usize,
    waiting: AtomicUsize,
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyGate {
    /// A gate letting `max_in_flight` run (0 = unlimited) and `max_queue` wait.
    pub fn new(max_in_flight: usize, max_queue: usize) -> Self {
        let permits = (max_in_flight > 0)
            .then(|| Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))));
        Self {
            permits,
            max_in_flight,
            max_queue,
            waiting: AtomicUsize::new(0),
        }
    }

    /// The configured cap (0 = unlimited).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The configured queue bound.
    pub fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// A request arriving now would run at once (a free slot and nobody waiting).
    pub fn has_capacity(&self) -> bool {
        self.permits
            .as_ref()
            .is_none_or(|sem| sem.available_permits() > 0 && self.queue_len() == 0)
    }

    /// Requests waiting now.
    pub fn queue_len(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Admits at once when there is no cap or a slot is free and nobody waits; `None` means
    /// the request has to queue with [`ConcurrencyGate::admit`].
    pub fn try_admit(&self) -> Option<Admission> {
        let Some(sem) = &self.permits else {
            return Some(Admission { _permit: None });
        };
        Arc::clone(sem)
            .try_acquire_owned()
            .ok()
            .map(|permit| Admission {
                _permit: Some(permit),
            })
    }

    /// Waits for a turn, at most `timeout`.
    pub async fn admit(&self, timeout: Duration) -> Result<Admission, QueueError> {
        if let Some(admission) = self.try_admit() {
            return Ok(admission);
        }
        let Some(sem) = &self.permits else {
            return Ok(Admission { _permit: None });
        };
        // Reserve a queue slot first so the bound holds under concurrency.
        let prev = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _slot = WaitingGuard(&self.waiting);
        if prev >= self.max_queue {
            return Err(QueueError::Full);
        }
        match tokio::time::timeout(timeout, Arc::clone(sem).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Admission {
                _permit: Some(permit),
            }),
            // The semaphore is never closed; treat it like a timeout if it ever is.
            Ok(Err(_)) | Err(_) => Err(QueueError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unlimited_always_admits() {
        let g = ConcurrencyGate::new(0, 0);
        let _a = g.admit(Duration::from_secs(1)).await.unwrap();
        let _b = g.admit(Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_refuses_and_waiter_times_out() {
        let g = Arc::new(ConcurrencyGate::new(1, 1));
        let first = g.admit(Duration::from_secs(1)).await.unwrap();
        let g2 = Arc::clone(&g);
        let waiter =
            tokio::spawn(async move { g2.admit(Duration::from_secs(5)).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(g.queue_len(), 1);
        assert_eq!(
            g.admit(Duration::from_secs(1)).await.unwrap_err(),
            QueueError::Full
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(waiter.await.unwrap(), Err(QueueError::Timeout));
        drop(first);
        assert_eq!(g.queue_len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let g = Arc::new(ConcurrencyGate::new(1, 10));
        let first = g.admit(Duration::from_secs(1)).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(10);
        let mut handles = Vec::new();
        for i in 0..5 {
            let g = Arc::clone(&g);
            let tx = tx.clone();
            handles.push(tokio::spawn(async move {
                let adm = g.admit(Duration::from_secs(60)).await.unwrap();
                tx.send(i).await.unwrap();
                drop(adm);
            }));
            // Let each waiter enqueue before the next one arrives.
            tokio::task::yield_now().await;
        }
        drop(first);
        for h in handles {
            h.await.unwrap();
        }
        let mut order = Vec::new();
        while let Ok(i) = rx.try_recv() {
            order.push(i);
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
    }
}
