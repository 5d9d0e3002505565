//! The replication protocol's simulation (`broker::replication::sim`) over a bounded number of
//! seeds: no acknowledged record is lost or changed under crashes, partitions, lost, repeated
//! and reordered messages, arbitrary elections and retention at every node; a seed replays
//! exactly; each planted
//! protocol bug is caught. Longer runs: `cargo run --release -p broker --example simulate --
//! --cluster --seeds 100000` (REPLICATION.md).

use broker::replication::sim::{ClusterOptions, ClusterOutcome, run};
use broker::sim::Planted;

#[test]
fn no_acknowledged_record_is_lost_under_any_schedule() {
    let mut total = ClusterOutcome::default();
    for seed in 0..1_500 {
        match run(seed, &ClusterOptions::default()) {
            Ok(o) => total.add(&o),
            Err(f) => panic!("{f}"),
        }
    }
    // The schedules did what they are for.
    for (what, n) in [
        ("acknowledged records", total.acked),
        ("recoveries", total.recoveries),
        ("crashes", total.crashes),
        ("dropped messages", total.dropped),
        ("repeated messages", total.duplicated),
        ("produces sent again", total.retries),
        ("records cut from a divergent tail", total.truncated),
        ("records deleted by retention", total.retained),
        ("logs started again at their leader's start", total.restarts),
    ] {
        assert!(n > 100, "only {n} {what} in 1,500 seeds: {total}");
    }
}

#[test]
fn a_cluster_seed_replays_exactly() {
    for seed in [5, 99, 31_337] {
        let a = run(seed, &ClusterOptions::default()).unwrap();
        let b = run(seed, &ClusterOptions::default()).unwrap();
        assert_eq!(a, b, "seed {seed}");
    }
    let other = run(100, &ClusterOptions::default()).unwrap();
    assert_ne!(
        other.trace,
        run(99, &ClusterOptions::default()).unwrap().trace
    );
}

/// Each planted protocol bug fails within the seeds CI runs.
#[test]
fn every_planted_protocol_bug_is_caught() {
    for bug in Planted::REPLICATION {
        let opts = ClusterOptions {
            planted: Some(bug),
            ..ClusterOptions::default()
        };
        let caught = (0..1_500).find_map(|seed| run(seed, &opts).err());
        let failure = caught.unwrap_or_else(|| panic!("{} passed 1,500 seeds", bug.name()));
        assert!(
            failure.to_string().contains(&format!(
                "--cluster --seed {} --planted {}",
                failure.seed,
                bug.name()
            )),
            "the failure says how to replay it: {failure}"
        );
    }
}
