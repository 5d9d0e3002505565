//! Runs the broker's disk-fault simulator over many seeds, or replays one.
//!
//! ```text
//! cargo run --release -p broker --example simulate -- --seeds 10000
//! cargo run --release -p broker --example simulate -- --seed 42            # replay, with events
//! cargo run --release -p broker --example simulate -- --seeds 200 --planted skip-sync
//! cargo run --release -p broker --example simulate -- --cluster --seeds 10000   # replication
//! ```
//!
//! Exits 1 at the first failing seed, after printing it and how to replay it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use broker::config::FsyncPolicy;
use broker::replication::sim::{ClusterOptions, ClusterOutcome};
use broker::sim::disk::FaultCounts;
use broker::sim::{Options, Planted, run};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Runs the broker's deterministic disk-fault simulator")]
struct Args {
    /// How many seeds to run, from --first.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Replay this one seed (and print its events).
    #[arg(long)]
    seed: Option<u64>,
    /// Simulate the replication protocol among 3 or 5 replicas instead of one broker's disk.
    #[arg(long)]
    cluster: bool,
    /// Steps per run (default: 400 for the disk, 2000 for a cluster).
    #[arg(long)]
    steps: Option<usize>,
    /// The fsync policy: always, never, or an interval in milliseconds.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Plant a bug (needs --features planted-bugs): skip-sync, keep-torn-record,
    /// ack-before-journal-sync; with --cluster: no-promise-check, best-by-length,
    /// count-stale-followers, trust-follower-end, retain-uncommitted, no-log-restart.
    #[arg(long)]
    planted: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let policy = match args.fsync.as_str() {
        "always" => FsyncPolicy::Always,
        "never" => FsyncPolicy::Never,
        ms => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => FsyncPolicy::Interval(Duration::from_millis(ms)),
            _ => {
                eprintln!("--fsync must be always, never or milliseconds, not {ms:?}");
                return ExitCode::from(2);
            }
        },
    };
    let planted = match args.planted.as_deref() {
        None => None,
        Some(name) => match Planted::ALL.iter().find(|p| p.name() == name) {
            Some(p) => Some(*p),
            None => {
                let names: Vec<_> = Planted::ALL.iter().map(|p| p.name()).collect();
                eprintln!("no planted bug {name:?}; there are: {}", names.join(", "));
                return ExitCode::from(2);
            }
        },
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first..args.first.saturating_add(args.seeds)).collect(),
    };
    if args.cluster {
        let opts = ClusterOptions {
            steps: args.steps.unwrap_or(ClusterOptions::default().steps),
            planted,
            events: if args.seed.is_some() { usize::MAX } else { 40 },
        };
        return run_cluster(&seeds, &opts, args.seed.is_some());
    }
    let opts = Options {
        steps: args.steps.unwrap_or(Options::default().steps),
        policy,
        planted,
        events: if args.seed.is_some() { usize::MAX } else { 40 },
    };
    let started = Instant::now();
    let mut faults = FaultCounts::default();
    let (mut acked, mut deliveries, mut restarts, mut refused, mut dead) = (0, 0, 0, 0, 0);
    for (i, seed) in seeds.iter().enumerate() {
        match run(*seed, &opts) {
            Ok(o) => {
                faults.add(&o.faults);
                acked += o.acked_records;
                deliveries += o.acked_deliveries;
                restarts += o.restarts;
                refused += o.refused;
                dead += o.dead_letters;
                if args.seed.is_some() {
                    for e in &o.events {
                        println!("{e}");
                    }
                    println!(
                        "seed {seed} passed: {} records and {} deliveries acknowledged, {} dead letters, {} restarts; faults {:?}; trace {:016x}",
                        o.acked_records,
                        o.acked_deliveries,
                        o.dead_letters,
                        o.restarts,
                        o.faults,
                        o.trace
                    );
                }
            }
            Err(f) => {
                eprintln!("{f}");
                eprintln!(
                    "({} seeds passed before it, in {:.1} s)",
                    i,
                    started.elapsed().as_secs_f64()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds passed in {secs:.1} s ({:.0} seeds/min), {} steps each, fsync {}",
        seeds.len(),
        seeds.len() as f64 / secs * 60.0,
        opts.steps,
        args.fsync
    );
    println!(
        "acknowledged: {acked} records, {deliveries} deliveries; {dead} dead letters; {restarts} restarts; {refused} produces refused after a failed write or sync"
    );
    println!("faults: {faults:?}");
    ExitCode::SUCCESS
}

/// Runs the replication simulation over `seeds`.
fn run_cluster(seeds: &[u64], opts: &ClusterOptions, verbose: bool) -> ExitCode {
    let started = Instant::now();
    let mut total = ClusterOutcome::default();
    for (i, seed) in seeds.iter().enumerate() {
        match broker::replication::sim::run(*seed, opts) {
            Ok(o) => {
                total.add(&o);
                if verbose {
                    for e in &o.events {
                        println!("{e}");
                    }
                    println!(
                        "seed {seed} passed with {} replicas: {o}; trace {:016x}",
                        o.nodes, o.trace
                    );
                }
            }
            Err(f) => {
                eprintln!("{f}");
                eprintln!(
                    "({i} seeds passed before it, in {:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} cluster seeds passed in {secs:.1} s ({:.0} seeds/min), {} steps each",
        seeds.len(),
        seeds.len() as f64 / secs * 60.0,
        opts.steps
    );
    println!("{total}");
    ExitCode::SUCCESS
}
