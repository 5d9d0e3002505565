//! The pacing law on its own, then in a simulated sale: a line of visitors admitted on the
//! curve the pacer turns, who buy some time after their admission, and workers that decide
//! at a capacity. Seeded, so a failure replays.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::domain::{LinePace, UnixMillis};

fn reading(queued: u64, decided_per_s: f64, peak: f64) -> Reading {
    Reading {
        queued,
        decided_per_s,
        peak_decided_per_s: peak,
        queue_growing: false,
    }
}

#[test]
fn the_rate_grows_while_the_workers_keep_up_and_falls_when_they_fall_behind() {
    // Keeping up (0.1 s of work queued): +25%, rounded up, under the ceiling.
    assert_eq!(
        next_rate(&reading(100, 1_000.0, 1_000.0), 1_000, 500),
        1_250
    );
    assert_eq!(next_rate(&reading(0, 0.0, 10.0), 1, 1), 2, "1/s grows");
    // After a drain, straight back to 90% of what the workers decided.
    assert_eq!(next_rate(&reading(100, 5_000.0, 5_000.0), 10, 10), 4_500);
    // The ceiling: 4 × the fastest deciding seen, or the room's start.
    assert_eq!(next_rate(&reading(0, 100.0, 100.0), 390, 50), 400);
    assert_eq!(
        next_rate(&reading(0, 0.0, 0.0), 500, 500),
        500,
        "no demand seen"
    );
    assert_eq!(
        next_rate(&reading(0, 0.0, 0.0), 800, 500),
        800,
        "a rise never lowers"
    );
    // A short queue that grows: held.
    let growing = Reading {
        queue_growing: true,
        ..reading(100, 1_000.0, 1_000.0)
    };
    assert_eq!(next_rate(&growing, 1_000, 500), 1_000);
    // Falling behind (3 s of work): 90% of what the workers decide, never a rise.
    assert_eq!(
        next_rate(&reading(3_000, 1_000.0, 1_000.0), 2_000, 500),
        900
    );
    assert_eq!(next_rate(&reading(3_000, 1_000.0, 1_000.0), 600, 500), 600);
    // Stopped workers: any queue is a long lag, and the line slows to the floor.
    assert_eq!(next_rate(&reading(10, 0.0, 1_000.0), 1_000, 500), 1);
    // In between: held.
    assert_eq!(
        next_rate(&reading(1_000, 1_000.0, 1_000.0), 1_234, 500),
        1_234
    );
    assert_eq!(
        next_rate(&reading(0, 1e12, 1e12), WaitingRoom::MAX_ADMIT_PER_S, 1),
        WaitingRoom::MAX_ADMIT_PER_S,
        "the ceiling of rooms"
    );
}

#[test]
fn a_reading_needs_two_backlogs_and_a_clock_that_moves() {
    let backlog = |queued, decided| Backlog {
        queued,
        busy_partitions: 1,
        decided,
    };
    let mut p = Pacer::default();
    assert_eq!(p.observe(1_000, backlog(5, 100)), None, "one is not a rate");
    let r = p.observe(3_000, backlog(7, 500)).unwrap();
    assert_eq!(r.queued, 7);
    assert!((r.decided_per_s - 200.0).abs() < 1e-9);
    assert!((r.peak_decided_per_s - 200.0).abs() < 1e-9);
    assert!(!r.queue_growing, "by 2, under the slack of 10");
    let r = p.observe(5_000, backlog(30, 600)).unwrap();
    assert!((r.decided_per_s - 50.0).abs() < 1e-9);
    assert!(
        (r.peak_decided_per_s - 200.0).abs() < 1e-9,
        "the peak stays"
    );
    assert!(r.queue_growing, "by 23");
    assert_eq!(p.observe(5_000, backlog(7, 700)), None, "no time passed");
    assert_eq!(
        p.observe(7_000, backlog(7, 10)),
        None,
        "the count went back"
    );
    assert!(
        p.observe(9_000, backlog(7, 30)).is_some(),
        "and starts over"
    );
}

/// A simulated sale, in steps of [`STEP_MS`].
struct Sale {
    /// Workers' capacity, purchases a second, from a given time on.
    capacity: Box<dyn Fn(i64) -> f64>,
    /// Share of admitted visitors who buy.
    buys: f64,
    /// The slowest buyer's delay from admission to purchase (each draws 0..this).
    think_ms: i64,
    start_per_s: u32,
    seconds: i64,
}

const STEP_MS: i64 = 100;

/// What the simulation saw each second: (second, rate, queued, decided that second).
type Trace = Vec<(i64, u32, u64, u64)>;

impl Sale {
    fn run(&self, seed: u64) -> Trace {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pace = LinePace::opening(UnixMillis(0), self.start_per_s);
        let mut pacer = Pacer::default();
        // Purchases on their way (arrival time), the queue, the work done.
        let mut arriving: Vec<i64> = Vec::new();
        let (mut queued, mut decided, mut credit) = (0u64, 0u64, 0.0f64);
        let mut admitted_before = 0u64;
        let mut decided_this_second = 0u64;
        let mut trace = Trace::new();
        for step in 1..=(self.seconds * 1000 / STEP_MS) {
            let now = step * STEP_MS;
            let admitted = pace.admitted_by(UnixMillis(now));
            assert!(
                admitted >= admitted_before,
                "the line went back at {now} ms"
            );
            for _ in admitted_before..admitted {
                if rng.random_bool(self.buys) {
                    arriving.push(now + rng.random_range(0..=self.think_ms));
                }
            }
            admitted_before = admitted;
            let before = arriving.len();
            arriving.retain(|at| *at > now);
            queued += (before - arriving.len()) as u64;
            // A step's capacity left unused is lost (but for a fraction of a purchase).
            credit += (self.capacity)(now) * STEP_MS as f64 / 1000.0;
            let done = (credit.floor() as u64).min(queued);
            credit = (credit - done as f64).min(1.0);
            queued -= done;
            decided += done;
            decided_this_second += done;
            if now % TICK.as_millis() as i64 == 0 {
                let backlog = Backlog {
                    queued,
                    busy_partitions: 1,
                    decided,
                };
                if let Some(r) = pacer.observe(now, backlog) {
                    let rate = next_rate(&r, pace.per_s, self.start_per_s);
                    if rate != pace.per_s {
                        pace = pace.turned(UnixMillis(now), rate);
                    }
                }
            }
            if now % 1000 == 0 {
                trace.push((now / 1000, pace.per_s, queued, decided_this_second));
                decided_this_second = 0;
            }
        }
        trace
    }
}

fn seconds(trace: &Trace, from: i64, to: i64) -> impl Iterator<Item = &(i64, u32, u64, u64)> {
    trace.iter().filter(move |(s, ..)| (from..to).contains(s))
}

#[test]
fn a_sale_runs_near_the_workers_capacity_without_a_long_queue() {
    for seed in 0..8 {
        let trace = Sale {
            capacity: Box::new(|_| 10_000.0),
            buys: 0.8,
            think_ms: 3_000,
            start_per_s: 1_000,
            seconds: 120,
        }
        .run(seed);
        // After the ramp, the workers are kept busy...
        let late: Vec<_> = seconds(&trace, 60, 120).collect();
        let mean = late.iter().map(|t| t.3 as f64).sum::<f64>() / late.len() as f64;
        assert!(mean > 8_000.0, "seed {seed}: {mean:.0} decided/s of 10,000");
        // ...and the queue never holds much more than the pacer's band: a few seconds of work.
        let worst = seconds(&trace, 0, 120).map(|t| t.2).max().unwrap();
        assert!(
            worst < 40_000,
            "seed {seed}: {worst} queued, over 4 s of work: {trace:?}"
        );
        // The rate found is about what the workers take, given that 80% buy.
        let rate = late.iter().map(|t| f64::from(t.1)).sum::<f64>() / late.len() as f64;
        assert!(
            (8_000.0..25_000.0).contains(&rate),
            "seed {seed}: {rate:.0}/s admitted: {trace:?}"
        );
    }
}

#[test]
fn when_the_workers_stop_the_line_slows_to_a_trickle_and_recovers_after() {
    for seed in 0..4 {
        let trace = Sale {
            // Down from 40 s to 70 s.
            capacity: Box::new(|now| {
                if (40_000..70_000).contains(&now) {
                    0.0
                } else {
                    5_000.0
                }
            }),
            buys: 0.9,
            think_ms: 1_000,
            start_per_s: 1_000,
            seconds: 130,
        }
        .run(seed);
        let at = |s: i64| trace.iter().find(|t| t.0 == s).unwrap().1;
        assert!(at(40) > 3_000, "seed {seed}: ramped up before: {}", at(40));
        assert!(
            at(65) < at(40) / 20,
            "seed {seed}: still {} /s with the workers down: {trace:?}",
            at(65)
        );
        let after: Vec<_> = seconds(&trace, 110, 130).collect();
        let mean = after.iter().map(|t| t.3 as f64).sum::<f64>() / after.len() as f64;
        assert!(mean > 4_000.0, "seed {seed}: recovered to {mean:.0}/s");
    }
}

#[test]
fn with_nobody_buying_the_line_keeps_its_starting_pace() {
    let trace = Sale {
        capacity: Box::new(|_| 10_000.0),
        buys: 0.0,
        think_ms: 1_000,
        start_per_s: 700,
        seconds: 60,
    }
    .run(1);
    assert!(trace.iter().all(|t| t.1 == 700), "{trace:?}");
}
