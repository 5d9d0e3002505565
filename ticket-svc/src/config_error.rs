//! [`ConfigError`]: a setting out of its range, as a configuration type's `validate` finds it.
//! Every configuration type of the ticket crates checks itself, and whatever runs with one
//! (`run_api`, `run_workers`, `BrokerQueue::connect`, the stack runner) refuses it when it does
//! not, however it was made: by the command line, or by code that builds it directly.

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {reason}")]
pub struct ConfigError {
    /// The setting, as the configuration type names it (e.g. `WorkerConfig::batch_max_jobs`).
    pub setting: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl ConfigError {
    /// `Err` naming `setting` unless `ok`.
    pub fn check(ok: bool, setting: &'static str, reason: impl Into<String>) -> Result<(), Self> {
        if ok {
            Ok(())
        } else {
            Err(Self {
                setting,
                reason: reason.into(),
            })
        }
    }
}
