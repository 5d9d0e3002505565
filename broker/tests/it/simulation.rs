//! The disk-fault simulator (`broker::sim`) over a bounded number of seeds: every promise holds
//! under every fault, a seed replays exactly, and each planted bug is caught. Longer runs:
//! `cargo run --release -p broker --example simulate -- --seeds 10000` (docs/DESIGN.md).

use std::time::Duration;

use broker::config::FsyncPolicy;
use broker::sim::disk::FaultCounts;
use broker::sim::{Options, Planted, run};

fn run_seeds(seeds: std::ops::Range<u64>, opts: &Options) -> FaultCounts {
    let mut total = FaultCounts::default();
    for seed in seeds {
        match run(seed, opts) {
            Ok(o) => total.add(&o.faults),
            Err(f) => panic!("{f}"),
        }
    }
    total
}

#[test]
fn every_promise_holds_under_every_fault_with_fsync_always() {
    let total = run_seeds(0..150, &Options::default());
    // Every fault of the model happened (swarm testing turns each off in some runs).
    let FaultCounts {
        crashes,
        lost_writes,
        torn_writes,
        kept_writes,
        lost_names,
        sync_errors,
        enospc,
        bit_flips,
    } = total;
    for (name, n) in [
        ("crashes", crashes),
        ("lost writes", lost_writes),
        ("torn writes", torn_writes),
        ("unsynced writes kept", kept_writes),
        ("lost names", lost_names),
        ("sync errors", sync_errors),
        ("ENOSPC", enospc),
        ("bit flips", bit_flips),
    ] {
        assert!(n > 0, "no {name} in 150 seeds: {total:?}");
    }
}

#[test]
fn integrity_holds_with_fsync_never_and_interval() {
    run_seeds(
        1_000..1_060,
        &Options {
            policy: FsyncPolicy::Never,
            ..Options::default()
        },
    );
    run_seeds(
        2_000..2_060,
        &Options {
            policy: FsyncPolicy::Interval(Duration::from_millis(200)),
            ..Options::default()
        },
    );
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 77, 4_242] {
        let a = run(seed, &Options::default()).unwrap();
        let b = run(seed, &Options::default()).unwrap();
        assert_eq!(a.trace, b.trace, "seed {seed}");
        assert_eq!(a.faults, b.faults, "seed {seed}");
        assert_eq!(a.acked_records, b.acked_records, "seed {seed}");
    }
    let other = run(78, &Options::default()).unwrap();
    assert_ne!(other.trace, run(77, &Options::default()).unwrap().trace);
}

/// Each planted bug fails within a few seeds.
#[test]
fn every_planted_bug_is_caught() {
    for bug in Planted::DISK {
        let opts = Options {
            planted: Some(bug),
            ..Options::default()
        };
        let caught = (0..20).find_map(|seed| run(seed, &opts).err());
        let failure = caught.unwrap_or_else(|| panic!("{} passed 20 seeds", bug.name()));
        assert!(
            failure
                .to_string()
                .contains(&format!("--planted {}", bug.name())),
            "the failure says how to replay it: {failure}"
        );
    }
    // And without it, the same seeds pass.
    run_seeds(0..20, &Options::default());
}
