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
//!   confirmed after it (a later *smaller* one may still fit);
//! - an event's [`SaleWindow`] is valid (it closes after it opens, within the years 2000 to
//!   9999) and half-open: [`SaleWindow::state_at`] says open from `opens_at` itself until
//!   `closes_at`; an event without one is [`SaleWindow::ALWAYS`] on sale;
//! - an event's [`WaitingRoom`] admits 1 to 1,000,000 visitors a second, needs the window's
//!   `opens_at`, seals its pre-queue's size once, and never shows its [`LineSeed`] (not in
//!   `Debug`, not in JSON).

mod error;
mod ledger;
mod types;
mod waiting_room;
mod window;

pub use error::DomainError;
pub use ledger::{Decision, Ledger, decide_in_order};
pub use types::{
    Event, EventId, EventSpec, IdempotencyKey, MAX_SHARDS, Position, Purchase, PurchaseId,
    PurchaseJob, PurchaseRequest, PurchaseStatus, QueuedJob, RejectReason,
};
pub use waiting_room::{LinePace, LineSeed, Pacing, WaitingRoom};
pub use window::{SaleState, SaleWindow, UnixMillis};
