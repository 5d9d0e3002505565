//! The purchase workers: a [`Worker`] pulls a batch, decides it in one store transaction,
//! commits, then acks (`purchase_worker` says why that order is safe and how failures are
//! handled); [`run_workers`] runs a process's worth of them with their `/metrics` listener.

mod purchase_worker;
mod run_workers;

pub use purchase_worker::{
    DEFAULT_LINGER_MS, DEFAULT_STORE_PATIENCE_S, MAX_BATCH_JOBS, MAX_LINGER, MAX_STORE_PATIENCE_S,
    REJOIN_AFTER_FETCH_FAILURES, Worker, WorkerConfig,
};
pub use run_workers::run_workers;
