//! The admin listener: `GET /metrics`, `GET /status` (HTML), `GET /status.json`,
//! `POST /backends`, `DELETE /backends/{addr}`. Loopback by default; the mutating routes
//! require the bearer token when one is configured.
//!
//! The top layer beside the client listeners: it reads the shared state and serves the
//! metrics ([`crate::metrics`]) the rest of the balancer records; nothing below imports it.

pub mod api;
pub mod status;
