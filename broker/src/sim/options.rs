//! What a simulated run takes and gives back: its [`Options`], the fault rates its seed draws
//! ([`faults_for`]), and an [`Outcome`], or a [`Failure`] that says how to replay it.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::disk::{FaultCounts, Faults};
use crate::config::FsyncPolicy;
use crate::planted::Planted;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Steps per run.
    pub steps: usize,
    /// The broker's fsync policy (the checks hold under `always`; under the others only the
    /// integrity checks apply).
    pub policy: FsyncPolicy,
    /// A bug planted in the broker, to show the simulator finds it.
    pub planted: Option<Planted>,
    /// How many of the last events a failure shows.
    pub events: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            steps: 400,
            policy: FsyncPolicy::Always,
            planted: None,
            events: 40,
        }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The faults injected.
    pub faults: FaultCounts,
    /// Records whose produce was acknowledged.
    pub acked_records: u64,
    /// Deliveries whose ack was acknowledged.
    pub acked_deliveries: u64,
    /// Deliveries handed out.
    pub deliveries: u64,
    /// Records moved to the dead-letter topic.
    pub dead_letters: u64,
    /// Restarts (crashes and clean ones).
    pub restarts: u64,
    /// Produces refused because a partition stopped after a failed write or sync.
    pub refused: u64,
    /// A hash of everything that happened: equal for equal seeds.
    pub trace: u64,
    /// The last events (as many as `Options::events` asks for).
    pub events: Vec<String>,
}

/// A run that broke a promise.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed that replays it.
    pub seed: u64,
    /// The step it failed at.
    pub step: usize,
    /// What was wrong.
    pub message: String,
    /// The last events before it.
    pub events: Vec<String>,
    /// The arguments of `--example simulate` that replay it.
    pub replay: String,
}

impl Options {
    /// The arguments of `--example simulate` that run `seed` with these options.
    pub fn replay_args(&self, seed: u64) -> String {
        let mut args = format!("--seed {seed}");
        if self.steps != Self::default().steps {
            args.push_str(&format!(" --steps {}", self.steps));
        }
        match self.policy {
            FsyncPolicy::Always => {}
            FsyncPolicy::Never => args.push_str(" --fsync never"),
            FsyncPolicy::Interval(d) => args.push_str(&format!(" --fsync {}", d.as_millis())),
        }
        if let Some(p) = self.planted {
            args.push_str(&format!(" --planted {}", p.name()));
        }
        args
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} failed at step {}: {}",
            self.seed, self.step, self.message
        )?;
        writeln!(
            f,
            "replay it: cargo run --release -p broker --features planted-bugs --example simulate -- {}",
            self.replay
        )?;
        writeln!(f, "last events:")?;
        for e in &self.events {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// The faults of one run, drawn from its seed: each fault is on in some runs and off in
/// others (swarm testing), at rates that make it happen a few times per run.
pub fn faults_for(seed: u64) -> Faults {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_FA17);
    let mut on = |p: f64| if rng.random_bool(0.7) { p } else { 0.0 };
    Faults {
        p_keep_unsynced: on(0.5),
        p_torn: on(0.5),
        p_sync_eio: on(0.01),
        p_enospc: on(0.01),
        p_bit_flip: on(0.005),
    }
}
