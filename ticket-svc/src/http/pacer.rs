//! The pacer's loop ([`crate::line::pacer`]): every [`REFRESH`] an API reads, from the store,
//! the latest curve point of each auto-paced line it serves, and turns the lines whose point is
//! a [`TICK`] old by what the queue says of the workers. Of several instances turning a line at
//! once one wins the store's compare-and-set; the others take its point.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::AppError;
use super::state::ApiState;
use crate::domain::{EventId, UnixMillis};
use crate::line::Line;
use crate::line::pacer::{LEAD, Pacer, Reading, TICK, next_rate};
use crate::metrics::DirectionLabels;
use crate::queue::PurchaseQueue;
use crate::store::Store;

/// How often an API refreshes its auto-paced lines' curve points. A change takes effect
/// [`LEAD`] after it is recorded, so every instance that refreshed in time admits by the same
/// curve at every moment.
pub const REFRESH: Duration = Duration::from_secs(1);
const _: () =
    assert!(REFRESH.as_millis() < LEAD.as_millis() && LEAD.as_millis() <= TICK.as_millis());

/// A line nobody asked about for this long is not paced (its rate holds until someone does).
const IDLE: Duration = Duration::from_secs(60);

impl<S: Store, Q: PurchaseQueue> ApiState<S, Q> {
    /// Paces the auto-paced lines this instance serves until `shutdown`.
    pub async fn run_pacer(self, shutdown: CancellationToken) {
        let mut pacer = Pacer::default();
        loop {
            tokio::select! {
                () = tokio::time::sleep(REFRESH) => {}
                () = shutdown.cancelled() => return,
            }
            let now = UnixMillis::now();
            let idle_since = UnixMillis(now.0 - i64::try_from(IDLE.as_millis()).unwrap_or(0));
            let lines: Vec<_> = self
                .lines
                .auto_paced()
                .into_iter()
                .filter(|(_, l)| l.seen_since(idle_since))
                .collect();
            if lines.is_empty() {
                continue;
            }
            let reading = match self.queue.backlog().await {
                Some(backlog) => pacer.observe(now.0, backlog),
                None => {
                    tracing::warn!("pacer: the queue cannot tell its backlog; rates hold");
                    None
                }
            };
            for (event, line) in lines {
                if let Err(e) = self.pace_line(event, &line, reading.as_ref(), now).await {
                    tracing::warn!(%event, error = %e, "pacer: the line's pace could not be read or recorded");
                }
            }
        }
    }

    /// Refreshes `line`'s curve point from the store and, when it is a [`TICK`] old and the
    /// reading asks another rate, records the turn.
    async fn pace_line(
        &self,
        event: EventId,
        line: &Line,
        reading: Option<&Reading>,
        now: UnixMillis,
    ) -> Result<(), AppError> {
        let recorded = self.bounded(self.store.line_pace(event)).await?;
        let current = recorded.unwrap_or_else(|| line.opening());
        line.set_pace(current);
        let tick_ms = i64::try_from(TICK.as_millis()).unwrap_or(i64::MAX);
        let lead_ms = i64::try_from(LEAD.as_millis()).unwrap_or(0);
        let Some(reading) = reading else {
            return Ok(());
        };
        if now < line.opening().at || now.0 - current.at.0 < tick_ms {
            return Ok(());
        }
        let rate = next_rate(reading, current.per_s, line.opening().per_s);
        if rate == current.per_s {
            return Ok(());
        }
        let next = current.turned(UnixMillis(now.0.saturating_add(lead_ms)), rate);
        let on_record = self
            .bounded(self.store.record_line_pace(event, recorded, next))
            .await?;
        line.set_pace(on_record.pace);
        // Counted and logged by the instance whose point was recorded, once a change.
        if on_record.won {
            let direction = if rate > current.per_s { "up" } else { "down" };
            self.metrics
                .line_pace_changes
                .get_or_create(&DirectionLabels { direction })
                .inc();
            tracing::info!(
                %event,
                from = current.per_s,
                to = rate,
                queued = reading.queued,
                decided_per_s = reading.decided_per_s.round(),
                "pacer: the line's admission rate changed"
            );
        }
        Ok(())
    }
}
