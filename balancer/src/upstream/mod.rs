//! Backends and everything that talks to them: the [`Backend`] record with its live state,
//! the HTTP/1.1 client ([`codec`]: the wire format, sans I/O; [`conn`]: one connection
//! driven by the request's own task), the per-backend connection [`pool`], the active
//! [`health`] checker, and the atomically swapped [`BackendSet`] the request path reads
//! without a lock.

mod backend;
pub mod codec;
pub mod conn;
pub mod health;
pub mod pool;
mod set;

pub use backend::{Backend, Exchange};
pub use set::{BackendSet, Backends};
