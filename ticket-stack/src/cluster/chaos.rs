//! Chaos: while a rush runs, SIGKILL one random running process of the cluster every few
//! seconds (a balancer, an API, a broker node, a worker) and start it again after a delay, as
//! a crashed machine coming back would. The kills are recorded for the rush's report.
//!
//! The victims follow from the seed (the timing of a real run does not replay: which process is
//! running at a kill depends on it). At most one process is down at a time: the delay must be
//! shorter than the interval, so a broker cluster of three never loses its majority to chaos.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use ticket_svc::config_error::ConfigError;

/// How often and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChaosConfig {
    /// A kill every this long, the first one this long after the start.
    pub every: Duration,
    /// A killed process is started again after this long.
    pub down: Duration,
    /// Picks the victims.
    pub seed: u64,
}

impl ChaosConfig {
    /// Checks that kills are spaced and a process is back before the next one.
    ///
    /// # Errors
    /// The setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(
            self.every >= Duration::from_millis(500),
            "ChaosConfig::every",
            "must be at least 500ms",
        )?;
        ConfigError::check(
            self.down < self.every,
            "ChaosConfig::down",
            "must be shorter than the interval between kills (one process down at a time)",
        )
    }
}

/// One kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillRecord {
    /// When.
    pub at: Instant,
    /// Which process, e.g. `api 2`.
    pub process: String,
}

impl Cluster {
    /// Kills a random running process every `config.every` until `stop`; returns the kills.
    pub async fn chaos(&self, config: ChaosConfig, stop: CancellationToken) -> Vec<KillRecord> {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut kills = Vec::new();
        let mut next = Instant::now() + config.every;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(next) => {}
            }
            next += config.every;
            let running: Vec<_> = self
                .processes()
                .into_iter()
                .filter(|p| p.state().pid().is_some())
                .collect();
            if running.is_empty() {
                continue;
            }
            let victim = &running[rng.random_range(0..running.len())];
            let at = Instant::now();
            if victim.kill(config.down).await {
                let process = victim.spec().name();
                self.metrics.killed(victim.spec().kind);
                tracing::warn!(%process, down = ?config.down, "chaos: killed");
                kills.push(KillRecord { at, process });
            }
        }
        kills
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_back_before_the_next_kill() {
        let ok = ChaosConfig {
            every: Duration::from_secs(5),
            down: Duration::from_secs(1),
            seed: 1,
        };
        ticket_svc::testing::assert_each_refused(
            &ok,
            ChaosConfig::validate,
            &[
                ("ChaosConfig::down", |c| c.down = Duration::from_secs(5)),
                ("ChaosConfig::every", |c| {
                    c.every = Duration::from_millis(100)
                }),
            ],
        );
    }
}
