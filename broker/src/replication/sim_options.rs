//! What a simulated cluster run takes and gives back: its [`ClusterOptions`] and a
//! [`ClusterOutcome`] (a failure is the disk simulator's `Failure`, with its replay command).

use crate::planted::Planted;

/// What a run does.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Steps per run (before the final convergence).
    pub steps: usize,
    /// A bug planted in the protocol, to show the simulation finds it.
    pub planted: Option<Planted>,
    /// How many of the last events a failure shows.
    pub events: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            steps: 2_000,
            planted: None,
            events: 40,
        }
    }
}

impl ClusterOptions {
    /// The arguments of `--example simulate` that replay `seed` with these options.
    pub fn replay_args(&self, seed: u64) -> String {
        let mut args = format!("--cluster --seed {seed}");
        if self.steps != Self::default().steps {
            args.push_str(&format!(" --steps {}", self.steps));
        }
        if let Some(p) = self.planted {
            args.push_str(&format!(" --planted {}", p.name()));
        }
        args
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterOutcome {
    /// Replicas in the run.
    pub nodes: usize,
    /// Records whose produce was acknowledged.
    pub acked: u64,
    /// Leaders elected.
    pub elections: u64,
    /// Leaders that finished recovery.
    pub recoveries: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Messages dropped (by a fault or a cut link).
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Produces sent again after no acknowledgement.
    pub retries: u64,
    /// Records cut from a replica's divergent tail.
    pub truncated: u64,
    /// Records retention deleted.
    pub retained: u64,
    /// Logs started again at their leader's log start.
    pub restarts: u64,
    /// A hash of everything that happened: equal for equal seeds.
    pub trace: u64,
    /// The last events.
    pub events: Vec<String>,
}

impl ClusterOutcome {
    /// Adds another run's counts (not its trace or events).
    pub fn add(&mut self, o: &Self) {
        self.acked += o.acked;
        self.elections += o.elections;
        self.recoveries += o.recoveries;
        self.crashes += o.crashes;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.retries += o.retries;
        self.truncated += o.truncated;
        self.retained += o.retained;
        self.restarts += o.restarts;
    }
}

impl std::fmt::Display for ClusterOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acked ({} produces sent again), {} elections, {} recoveries, {} crashes, {} dropped, {} duplicated, {} records cut, {} deleted by retention, {} logs restarted",
            self.acked,
            self.retries,
            self.elections,
            self.recoveries,
            self.crashes,
            self.dropped,
            self.duplicated,
            self.truncated,
            self.retained,
            self.restarts
        )
    }
}
