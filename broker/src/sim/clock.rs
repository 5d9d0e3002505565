//! The simulated clock: it moves only when the simulator moves it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::host::Clock;

/// Time in a simulated run.
#[derive(Debug, Default)]
pub struct SimClock {
    ms: AtomicU64,
}

/// The wall-clock time at which every simulated run starts (2026-01-01).
const EPOCH_MS: u64 = 1_767_225_600_000;

impl SimClock {
    /// Moves time on.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }
}

impl Clock for SimClock {
    fn elapsed(&self) -> Duration {
        self.now()
    }

    fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.ms.load(Ordering::Relaxed)
    }
}
