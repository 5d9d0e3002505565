//! The waiting room: a fair line in front of an event's sale, paced to what the back end takes.
//!
//! - **Joining.** A logged-in visitor joins an event's line: the API appends a join record to
//!   the event's [`LineLog`] (in production a broker topic of its own, `line.{event}`: one
//!   shared, durable, ordered source for every API instance) and answers a signed
//!   [`QueueTicket`] naming the event, the visitor and the join's sequence.
//! - **Opening.** At the event's `opens_at` the first API to serve the line appends a seal
//!   record (deduplicated, so every instance gets the same offset) and records its offset, the
//!   pre-queue's size, in the store (first writer wins). The pre-queue is shuffled by a secret
//!   seed stored with the event ([`order`]): arriving early gives no edge; later joins stand in
//!   arrival order behind it.
//! - **Pacing.** Places are admitted along a curve ([`pacing`]): at the room's `admit_per_s`
//!   from `opens_at`, which every instance computes alike from its clock, or, for an
//!   auto-paced room, faster or slower as the workers keep up ([`pacer`]), each change a point
//!   recorded in the store that every instance reads.
//! - **Proof of work.** A room may ask each joiner for a proof of work ([`proof`]): a number
//!   whose hash with a challenge signed for that visitor starts with the room's zero bits.
//! - **Permits.** An admitted visitor exchanges the ticket for a [`Permit`], valid a few
//!   minutes, and buys with it: the purchase id is derived from the permit, so one permit is one
//!   purchase however often it is sent.
//!
//! Nothing of a visitor is kept by an API: the ticket carries the sequence, the store the seed
//! and the pre-queue's size, the log the order. Any instance answers any visitor, and a restart
//! changes nobody's place.

mod broker_log;
mod error;
mod log;
mod order;
pub mod pacer;
mod pacing;
pub mod proof;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use broker_log::{BrokerLineLog, line_topic};
pub use error::LineError;
pub use log::{LineLog, LogFuture, MemoryLineLog};
pub use order::{LineOrder, MAX_PRE_QUEUE};
pub use pacing::{Turn, turn};
pub use tokens::{Permit, QueueTicket};

use crate::domain::{EventId, LinePace, Pacing, PurchaseId, UnixMillis, WaitingRoom};

/// The purchase a permit buys: a UUID v5 of (event, buyer, the join's sequence), so a permit
/// sent twice names one purchase, which the queue's dedup and the store decide once.
pub fn purchase_id_for_permit(permit: &Permit) -> PurchaseId {
    /// Fixed forever: changing it would let a permit buy twice across the change.
    const PERMIT_NAMESPACE: uuid::Uuid =
        uuid::Uuid::from_u128(0x5e1f_7a0c_93d2_4b6e_8c41_2f7d_0a9b_c3e5_u128);
    let name = format!("{}\n{}\n{}", permit.event, permit.visitor, permit.seq);
    PurchaseId(uuid::Uuid::new_v5(&PERMIT_NAMESPACE, name.as_bytes()))
}

/// The lines an API instance has served, each computed and cached once.
#[derive(Debug, Default)]
pub struct OpenLines {
    lines: Mutex<HashMap<EventId, Arc<Line>>>,
}

/// One event's line as an API instance serves it: its order once the line opened, the point
/// of its admission curve in use, and how long it is as far as this instance has seen (the
/// highest sequence of a token it was shown).
#[derive(Debug)]
pub struct Line {
    /// The order, computed once at the opening (concurrent first requests wait for the one
    /// computing it).
    pub order: tokio::sync::OnceCell<Arc<LineOrder>>,
    pacing: Pacing,
    opening: LinePace,
    state: Mutex<LineState>,
}

#[derive(Debug, Default)]
struct LineState {
    /// An auto-paced line's latest curve point, as last read from the store (`None` before).
    pace: Option<LinePace>,
    highest_seq: Option<u64>,
    /// When a visitor's token was last shown here.
    last_seen: Option<UnixMillis>,
}

impl Line {
    fn state(&self) -> std::sync::MutexGuard<'_, LineState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The curve's first point: the opening, at the room's rate.
    pub fn opening(&self) -> LinePace {
        self.opening
    }

    /// The curve point to admit by: a fixed line's opening; an auto-paced line's latest point
    /// as last read (`None` until it was read once).
    pub fn pace(&self) -> Option<LinePace> {
        match self.pacing {
            Pacing::Fixed => Some(self.opening),
            Pacing::Auto => self.state().pace,
        }
    }

    /// Takes `pace` (read from or recorded in the store) as an auto-paced line's latest point.
    pub fn set_pace(&self, pace: LinePace) {
        self.state().pace = Some(pace);
    }

    /// Notes that a visitor's token with sequence `seq` was shown now.
    pub fn observe(&self, seq: u64) {
        let mut st = self.state();
        st.highest_seq = Some(st.highest_seq.map_or(seq, |h| h.max(seq)));
        st.last_seen = Some(UnixMillis::now());
    }

    /// Whether a visitor's token was shown here since `since`.
    pub fn seen_since(&self, since: UnixMillis) -> bool {
        self.state().last_seen.is_some_and(|at| at >= since)
    }

    /// About how many wait at `now`: joined (as seen) less admitted.
    fn waiting(&self, now: UnixMillis) -> u64 {
        let st = self.state();
        let admitted = st.pace.unwrap_or(self.opening).admitted_by(now);
        st.highest_seq
            .map_or(0, |h| (h + 1).saturating_sub(admitted))
    }
}

impl OpenLines {
    /// `event`'s line (opening at `opens_at` behind `room`), made on first use.
    pub fn line(&self, event: EventId, opens_at: UnixMillis, room: &WaitingRoom) -> Arc<Line> {
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(lines.entry(event).or_insert_with(|| {
            Arc::new(Line {
                order: tokio::sync::OnceCell::new(),
                pacing: room.pacing,
                opening: LinePace::opening(opens_at, room.admit_per_s),
                state: Mutex::default(),
            })
        }))
    }

    /// The auto-paced lines served, for the pacer.
    pub fn auto_paced(&self) -> Vec<(EventId, Arc<Line>)> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, l)| l.pacing == Pacing::Auto)
            .map(|(e, l)| (*e, Arc::clone(l)))
            .collect()
    }

    /// About how many visitors wait, over every line seen: joined (the highest sequence seen,
    /// plus one) less admitted by `now`. Each instance sees the tokens of its own requests,
    /// so over several instances take the largest answer, not the sum.
    pub fn waiting(&self, now: UnixMillis) -> u64 {
        self.all().iter().map(|l| l.waiting(now)).sum()
    }

    /// Places admitted by `now` and the admission rate now, summed over the lines served that
    /// have opened.
    pub fn admitting(&self, now: UnixMillis) -> (u64, u64) {
        self.all()
            .iter()
            .filter_map(|l| l.pace())
            .fold((0, 0), |(admitted, per_s), p| {
                (
                    admitted.saturating_add(p.admitted_by(now)),
                    per_s + u64::from(p.rate_at(now)),
                )
            })
    }

    fn all(&self) -> Vec<Arc<Line>> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{BuyerId, Email};

    #[test]
    fn a_permit_names_one_purchase() {
        let ann = BuyerId::of(&Email::parse("ann@example.org").unwrap());
        let permit = |seq| Permit {
            event: EventId(1),
            visitor: ann.clone(),
            seq,
        };
        assert_eq!(
            purchase_id_for_permit(&permit(5)),
            purchase_id_for_permit(&permit(5))
        );
        assert_ne!(
            purchase_id_for_permit(&permit(5)),
            purchase_id_for_permit(&permit(6))
        );
        assert!(!purchase_id_for_permit(&permit(5)).is_minted());
    }
}
