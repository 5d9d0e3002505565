//! The SQLite store's side of holding pending rows in memory (see `store::pending`): writing
//! the rows held too long, and all of them at a clean stop.

use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::SqliteStore;
use super::sale::insert_pending;
use crate::store::error::StoreError;
use crate::store::pending::{FLUSH_AFTER, FLUSH_EVERY, PendingBuffer};

impl SqliteStore {
    /// With [`PendingRows::InMemory`](crate::store::PendingRows): every 250 ms, writes the
    /// pending rows held longer than 1 s and sets `held` to how many are held;
    /// once `shutdown` is cancelled, writes every row still held and returns. Run it beside the
    /// store (`up` does, and cancels it once its APIs and workers have stopped); without it, held
    /// rows wait for their decision.
    pub async fn write_held_rows(&self, held: Gauge, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            if let Err(e) = self.flush_held(FLUSH_AFTER).await {
                tracing::warn!(error = %e, "could not write held pending rows; retrying");
            }
            held.set(i64::try_from(self.held_pending()).unwrap_or(i64::MAX));
        }
        match self.flush_pending().await {
            Ok(n) => tracing::debug!(rows = n, "held pending rows written"),
            Err(e) => tracing::warn!(error = %e, "could not write the pending rows held at stop"),
        }
    }

    /// Pending rows held in memory now (0 when they are written at once).
    pub fn held_pending(&self) -> usize {
        self.inner.pending.as_ref().map_or(0, PendingBuffer::len)
    }

    /// Writes every pending row held in memory to SQLite (nothing when pending rows are
    /// written at once): how many.
    pub async fn flush_pending(&self) -> Result<usize, StoreError> {
        self.flush_held(Duration::ZERO).await
    }

    /// Writes the pending rows held at least `age` (one group commit: each row its own write,
    /// so one that cannot be written fails alone), then forgets those on record: how many.
    async fn flush_held(&self, age: Duration) -> Result<usize, StoreError> {
        let Some(buffer) = &self.inner.pending else {
            return Ok(0);
        };
        let due = buffer.older_than(age, Instant::now());
        let mut writes: tokio::task::JoinSet<_> = due
            .into_iter()
            .map(|job| {
                let store = self.clone();
                async move {
                    let id = job.job.purchase_id;
                    (
                        id,
                        store.write_pending(move |c| insert_pending(c, &job)).await,
                    )
                }
            })
            .collect();
        let (mut written, mut failure) = (0, None);
        while let Some(done) = writes.join_next().await {
            let (id, result) = done.map_err(|e| StoreError::Unavailable {
                reason: format!("pending row write ended: {e}"),
            })?;
            match result {
                Ok(_) => {
                    self.committed(&[id]);
                    written += 1;
                }
                // Held for the next try.
                Err(e) if e.is_transient() => failure = Some(e),
                // It can never be written (a broken reference): keeping it would retry forever.
                // Its job is still queued, and the worker's decision reports the same problem.
                Err(e) => {
                    tracing::warn!(error = %e, purchase_id = %id, "dropping a pending row that cannot be written");
                    buffer.release([id]);
                }
            }
        }
        failure.map_or(Ok(written), Err)
    }
}
