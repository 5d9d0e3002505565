//! [`QueueError`]: why the queue could not do what was asked (the API answers it 503).

use crate::config_error::ConfigError;

/// Why the queue could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue (broker) cannot be reached or refused the request.
    #[error("queue unavailable: {reason}")]
    Unavailable {
        /// What went wrong, for logs.
        reason: String,
    },
    /// The queue's configuration is out of range.
    #[error("queue configuration: {0}")]
    Config(#[from] ConfigError),
    /// The queue is at capacity.
    #[error("queue full ({capacity} jobs)")]
    Full {
        /// Its capacity, in jobs.
        capacity: usize,
    },
}
