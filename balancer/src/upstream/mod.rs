//! Backends and everything that talks to them: the [`Backend`] record with its live state,
//! the upstream HTTP/1.1 wire format ([`codec`], sans I/O), the per-backend connection
//! [`pool`], the active [`health`] checker, and the atomically swapped [`BackendSet`] the
//! request path reads without a lock.

mod backend;
pub mod codec;
pub mod health;
pub mod pool;
mod set;

pub use backend::{Backend, BackendMetrics, Exchange, class_index};
pub use set::{BackendSet, Backends};
