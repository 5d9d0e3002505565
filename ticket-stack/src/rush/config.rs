//! A rush's settings: [`RushConfig`].

use std::time::Duration;

use ticket_svc::domain::EventId;

use super::error::RushError;
use super::target::Target;

/// Settings for one rush.
#[derive(Debug, Clone)]
pub struct RushConfig {
    /// Where: the site's addresses. Slot `k` starts on target `k` modulo their number, and a
    /// request that fails moves its slot to the next one.
    pub targets: Vec<Target>,
    /// Which event.
    pub event: EventId,
    /// How many buyers.
    pub buyers: u64,
    /// Buyers in flight at once (connections).
    pub concurrency: usize,
    /// Buyers started per second (open model), or as fast as answered (closed model).
    pub rate: Option<f64>,
    /// Poll every purchase to its final state and check the invariants.
    pub verify: bool,
    /// Seed for the buyers' choices.
    pub seed: u64,
    /// Deadline per request.
    pub request_timeout: Duration,
    /// The longest `--verify` waits for purchases to become final.
    pub verify_timeout: Duration,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub show_progress: bool,
    /// Times a request is sent again, on the next target, after no answer or a 502, 503 or 504
    /// (see [`target`]).
    pub resends: u32,
    /// A buyer whose request still failed after its re-sends breaks the run (for runs where
    /// processes are killed on purpose: the re-sends must absorb every failure).
    pub require_answers: bool,
}

impl RushConfig {
    /// The most buyers one rush may have.
    pub const MAX_BUYERS: u64 = 10_000_000;
    /// The most concurrent slots.
    pub const MAX_CONCURRENCY: usize = 4_096;

    /// Re-sends per request by default: with their pauses (50 ms doubling to 1 s) a request is
    /// tried for about 4.5 s, past a process restart or a broker election.
    pub const DEFAULT_RESENDS: u32 = 8;

    /// The demo's rush: `buyers` as fast as answered with `concurrency` in flight, seed 1, 10 s
    /// per request, failures sent again [`Self::DEFAULT_RESENDS`] times, then every purchase
    /// polled to its final state (for up to 120 s) and the invariants checked, with a progress
    /// bar.
    pub fn verified(targets: Vec<Target>, event: EventId, buyers: u64, concurrency: usize) -> Self {
        Self {
            targets,
            event,
            buyers,
            concurrency,
            rate: None,
            verify: true,
            seed: 1,
            request_timeout: Duration::from_secs(10),
            verify_timeout: Duration::from_secs(120),
            show_progress: true,
            resends: Self::DEFAULT_RESENDS,
            require_answers: false,
        }
    }

    pub(super) fn check(&self) -> Result<(), RushError> {
        if self.targets.is_empty() {
            return Err(RushError::BadConfig("at least one target".into()));
        }
        if self.buyers == 0 || self.buyers > Self::MAX_BUYERS {
            return Err(RushError::BadConfig(format!(
                "buyers must be 1..={}",
                Self::MAX_BUYERS
            )));
        }
        if self.concurrency == 0 || self.concurrency > Self::MAX_CONCURRENCY {
            return Err(RushError::BadConfig(format!(
                "concurrency must be 1..={}",
                Self::MAX_CONCURRENCY
            )));
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(RushError::BadConfig("rate must be above 0".into()));
        }
        Ok(())
    }
}
