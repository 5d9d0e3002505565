//! ticket-svc integration tests: one binary, one module per area.

// Helpers here are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod api;
mod broker_queue;
mod line;
mod pacing;
mod page;
mod queue_contract;
mod replica;
mod sharded;
mod store;
mod worker;
