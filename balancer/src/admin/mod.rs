//! The admin listener: `GET /metrics`, `GET /status` (HTML), `GET /status.json`,
//! `POST /backends`, `DELETE /backends/{addr}`. Loopback by default; the mutating routes
//! require the bearer token when one is configured.

pub mod api;
pub mod metrics;
pub mod status;
