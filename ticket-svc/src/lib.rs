//! The ticket service: the HTTP API that accepts purchases, the workers that decide them, and the
//! stores that keep the sale. What an `api` or a `worker` deployment runs; the stack runner and
//! the buyer crowd live in `ticket-stack`.
//!
//! Layout: [`access`] says who may do what (buyer sessions, organizer tokens), [`domain`] holds
//! the sale rules (pure), [`line`] the waiting room, [`store`] the databases, [`queue`] the purchase
//! queue abstraction, [`http`] the API, [`worker`] the deciding loop.

pub mod access;
pub mod config_error;
pub mod domain;
pub mod http;
pub mod line;
pub mod metrics;
pub mod queue;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod worker;
