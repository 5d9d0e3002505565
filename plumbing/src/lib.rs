//! What every ticketrush binary needs, written once: log output ([`logging`]), signals that
//! start a drain ([`signals`]), the `/metrics` listener ([`metrics`]), an accept loop with a
//! connection cap ([`accept`]), a one-shot HTTP status probe ([`probe`]), and, behind the
//! `testing` feature, helpers for tests ([`testing`]).
//!
//! Shutdown is one type everywhere: a [`tokio_util::sync::CancellationToken`]. A server takes one,
//! stops accepting when it is cancelled, and drains what it holds.
//!
//! This crate depends on no program crate of the workspace; they depend on it.

pub mod accept;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod signals;
#[cfg(feature = "testing")]
pub mod testing;
