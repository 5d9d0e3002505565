//! Micro-benchmark of the balancer's backend pick: one `Selector::pick` per iteration, for each
//! strategy over 3 and 100 backends.
//!
//! Candidates read their weight and in-flight count from atomics, as the balancer's live
//! `Backend`s do, and carry a spread of loads (so least-conn and p2c have real comparisons to
//! make). Every backend is eligible; the eligibility closure is a plain atomic flag load, like
//! the request path's health check.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use balancer::config::Strategy;
use balancer::select::{Candidate, Selector};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// A backend as the selector sees it: live counters behind atomics.
struct Live {
    weight: AtomicU32,
    in_flight: AtomicU64,
    healthy: AtomicBool,
}

impl Candidate for Live {
    fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }
    fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// `n` backends with weights 1..=3 and in-flight counts 0..=16, spread deterministically.
fn backends(n: usize) -> Vec<Live> {
    (0..n)
        .map(|i| Live {
            weight: AtomicU32::new(u32::try_from(i % 3 + 1).unwrap_or(1)),
            in_flight: AtomicU64::new(u64::try_from((i * 7) % 17).unwrap_or(0)),
            healthy: AtomicBool::new(true),
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for (name, strategy) in [
        ("round_robin", Strategy::RoundRobin),
        ("least_conn", Strategy::LeastConn),
        ("p2c", Strategy::P2c),
    ] {
        for n in [3usize, 100] {
            let items = backends(n);
            let selector = Selector::new(strategy, n, Some(42));
            g.bench_with_input(BenchmarkId::new(name, n), &items, |b, items| {
                b.iter(|| {
                    black_box(selector.pick(black_box(items), |_, c: &Live| {
                        c.healthy.load(Ordering::Relaxed)
                    }))
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
