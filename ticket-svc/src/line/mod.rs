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
//! - **Pacing.** Places are admitted at the event's `admit_per_s` from `opens_at` ([`pacing`]):
//!   every instance computes the same counter from its clock.
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
mod pacing;
pub mod proof;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use broker_log::{BrokerLineLog, line_topic};
pub use error::LineError;
pub use log::{LineLog, LogFuture, MemoryLineLog};
pub use order::{LineOrder, MAX_PRE_QUEUE};
pub use pacing::{Turn, admitted, turn};
pub use tokens::{Permit, QueueTicket};

use crate::domain::{EventId, PurchaseId};

/// The purchase a permit buys: a UUID v5 of (event, buyer, the join's sequence), so a permit
/// sent twice names one purchase, which the queue's dedup and the store decide once.
pub fn purchase_id_for_permit(permit: &Permit) -> PurchaseId {
    /// Fixed forever: changing it would let a permit buy twice across the change.
    const PERMIT_NAMESPACE: uuid::Uuid =
        uuid::Uuid::from_u128(0x5e1f_7a0c_93d2_4b6e_8c41_2f7d_0a9b_c3e5_u128);
    let name = format!("{}\n{}\n{}", permit.event, permit.visitor, permit.seq);
    PurchaseId(uuid::Uuid::new_v5(&PERMIT_NAMESPACE, name.as_bytes()))
}

/// The lines an API instance has served: each opened line's order, computed once (concurrent
/// first requests wait for the one computing it), and how long each line is as far as this
/// instance has seen (the highest sequence of a token it was shown).
#[derive(Debug, Default)]
pub struct OpenLines {
    orders: Mutex<HashMap<EventId, Arc<tokio::sync::OnceCell<Arc<LineOrder>>>>>,
    seen: Mutex<HashMap<EventId, Seen>>,
}

/// One line's length and pace, as seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    highest_seq: u64,
    opens_at_ms: i64,
    per_s: u32,
}

impl OpenLines {
    /// Notes that `event`'s line (opening at `opens_at_ms`, admitting `per_s` a second) holds a
    /// join with sequence `seq`.
    pub fn observe(&self, event: EventId, seq: u64, opens_at_ms: i64, per_s: u32) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let line = seen.entry(event).or_insert(Seen {
            highest_seq: seq,
            opens_at_ms,
            per_s,
        });
        line.highest_seq = line.highest_seq.max(seq);
    }

    /// About how many visitors wait, over every line seen: joined (the highest sequence seen,
    /// plus one) less admitted by `now_ms`. Each instance sees the tokens of its own requests,
    /// so over several instances take the largest answer, not the sum.
    pub fn waiting(&self, now_ms: i64) -> u64 {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|l| (l.highest_seq + 1).saturating_sub(admitted(now_ms, l.opens_at_ms, l.per_s)))
            .sum()
    }

    /// The cell that holds (or will hold) `event`'s order.
    pub fn cell(&self, event: EventId) -> Arc<tokio::sync::OnceCell<Arc<LineOrder>>> {
        let mut orders = self
            .orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(orders.entry(event).or_default())
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
