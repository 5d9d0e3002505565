//! The sale rules: pure, synchronous, no I/O.
//!
//! Everything here is a value or a function of values, so it is tested without a database,
//! a socket or a runtime. The stores and the worker call into it; they never re-implement a rule.
//!
//! Invariants these types and [`Ledger`] keep (docs/DESIGN.md, "The sale's invariants"):
//! - sold ≤ tickets, and sold = the sum of confirmed quantities;
//! - no buyer's confirmed total goes over `max_per_buyer`;
//! - first come, first served: purchases are decided in position order, so a purchase that did
//!   not fit is rejected `sold_out` and no later purchase of the same or a larger quantity can be
//!   confirmed after it (a later *smaller* one may still fit).

mod ledger;
mod types;

pub use ledger::{Decision, Ledger, decide_in_order};
pub use types::{
    Event, EventId, EventSpec, IdempotencyKey, Position, Purchase, PurchaseId, PurchaseJob,
    PurchaseRequest, PurchaseStatus, QueuedJob, RejectReason,
};

/// A request that breaks a sale rule, named precisely enough to show to the buyer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The event name is empty or too long.
    #[error("name must be 1 to {max} characters")]
    BadName {
        /// The longest accepted name, in characters.
        max: usize,
    },
    /// The ticket count is outside the accepted range.
    #[error("tickets must be between 0 and {max}")]
    BadTickets {
        /// The largest accepted ticket count.
        max: u32,
    },
    /// `max_per_buyer` is outside the accepted range.
    #[error("max_per_buyer must be between 1 and {max}")]
    BadMaxPerBuyer {
        /// The largest accepted per-buyer limit.
        max: u32,
    },
    /// The buyer name is empty, too long or has control characters.
    #[error("buyer must be 1 to {max} printable characters")]
    BadBuyer {
        /// The longest accepted buyer name, in characters.
        max: usize,
    },
    /// The quantity is below 1 or above the event's `max_per_buyer`.
    #[error("quantity must be between 1 and {max_per_buyer} (got {got})")]
    BadQuantity {
        /// What the request asked for.
        got: i64,
        /// The event's per-buyer limit.
        max_per_buyer: u32,
    },
    /// The idempotency key is empty, too long or not visible ASCII.
    #[error("Idempotency-Key must be 1 to {max} visible ASCII characters")]
    BadIdempotencyKey {
        /// The longest accepted key, in bytes.
        max: usize,
    },
}
