//! The ticket HTTP API (routes and JSON per docs/DESIGN.md), on axum.
//!
//! `POST /events/{id}/purchases` answers 202 only after
//! [`PurchaseQueue::enqueue`](crate::queue::PurchaseQueue::enqueue) returned: a queue that fails
//! or does not answer within [`ApiConfig::enqueue_timeout`] gets a 503 with `Retry-After`; so does
//! a store call that outlives [`ApiConfig::store_timeout`]. Every error becomes a status in
//! exactly one place, [`AppError`]'s `IntoResponse`.
//!
//! Layout: `state` (what every handler shares), `routes` (the handlers and their JSON),
//! `access` (the credential extractors and the login routes), `line` (the waiting room's
//! routes), `pacer` (the loop that paces auto-paced lines), `page` (the buyer's page,
//! `GET /e/{id}`), `body` (reading bodies),
//! `router` (the route table and [`run_api`]), `track` (per-route metrics), `error` (the one
//! error→status mapping), `server` (accepting and draining connections).

mod access;
mod body;
mod error;
mod line;
mod pacer;
mod page;
mod router;
mod routes;
mod server;
mod state;
mod track;

pub use error::{AppError, RETRY_AFTER_SECS};
pub use router::{ApiListeners, router, run_api};
pub use server::{ServeConfig, serve};
pub use state::{ApiConfig, ApiState, FrontDoor, Shared};
