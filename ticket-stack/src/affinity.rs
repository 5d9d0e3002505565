//! One CPU per tokio worker thread, for a process that has the machine to itself (`up`, `demo`).
//!
//! Why: on a 2-vCPU machine a rush through `demo` left ~10% of the machine idle while requests
//! waited: the scheduler kept both runtime workers on one vCPU for stretches, and work waiting
//! on a busy vCPU's worker is not stolen by a worker that is asleep. With each worker held to its
//! own CPU the idle share fell to 6–7% and the demo's throughput rose by 2–16% (alternating
//! pairs; docs/PERFORMANCE.md, "Ticket API, workers and the stack").
//!
//! How: a worker pins itself the first time it parks (tokio calls `on_thread_park` on worker
//! threads only), taking the allowed CPUs in turn. A thread inherits its creator's CPU set, so
//! every other runtime thread (the blocking pool, which runs SQLite reads and the broker's file
//! work, and the dedicated I/O threads those start) resets itself to the whole allowed set when
//! it starts: only workers are ever pinned. Nothing is pinned when fewer than two CPUs are
//! allowed (taskset, a cpuset cgroup) or where the calls do not exist.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The CPUs this thread may run on now, in order (empty if unknown).
pub fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_getaffinity};
        match sched_getaffinity(None) {
            Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
            Err(_) => Vec::new(),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

/// Holds the calling thread to `cpus`; false if the system refused.
fn bind_current_thread(cpus: &[usize]) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_setaffinity};
        let mut set = CpuSet::new();
        for &c in cpus {
            set.set(c);
        }
        sched_setaffinity(None, &set).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpus;
        false
    }
}

thread_local! {
    /// Whether this worker thread has taken its CPU.
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

/// Sets `builder` (a multi-thread runtime) to pin each worker thread to one of the CPUs this
/// thread may use now, in turn, and to leave every other runtime thread free on all of them.
/// Returns those CPUs, or `None` (and leaves `builder` as it was) when fewer than two are
/// allowed. Replaces the builder's `on_thread_start` and `on_thread_park` hooks; `on_park` runs
/// on every park, after the pinning.
pub fn pin_workers(builder: &mut tokio::runtime::Builder, on_park: fn()) -> Option<Vec<usize>> {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return None;
    }
    let all: Arc<[usize]> = cpus.clone().into();
    let next = Arc::new(AtomicUsize::new(0));
    let every = Arc::clone(&all);
    builder
        .on_thread_start(move || {
            // Not inherited from whichever pinned worker started this thread.
            bind_current_thread(&every);
        })
        .on_thread_park(move || {
            if !PINNED.with(|p| p.replace(true)) {
                let turn = next.fetch_add(1, Ordering::Relaxed) % all.len();
                if let Some(&cpu) = all.get(turn)
                    && !bind_current_thread(&[cpu])
                {
                    tracing::debug!(cpu, "a runtime worker could not be pinned");
                }
            }
            on_park();
        });
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Workers end up on one CPU each (every allowed CPU used once with as many workers), and a
    /// blocking thread started from a pinned worker may run on all of them.
    #[test]
    fn workers_are_pinned_one_per_cpu_and_blocking_threads_are_not() {
        let cpus = allowed_cpus();
        if cpus.len() < 2 {
            eprintln!(
                "skipped: this thread may use {} CPU(s); pinning needs 2",
                cpus.len()
            );
            return;
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cpus.len()).enable_all();
        assert_eq!(pin_workers(&mut builder, || {}), Some(cpus.clone()));
        let rt = builder.build().expect("runtime");
        let (workers, last, blocking) = rt.block_on(async {
            // A worker pins itself when it first parks, which it does before it has work: probe
            // until every CPU has shown up as some worker's only CPU and the latest round of
            // probes saw no worker unpinned.
            let mut workers = BTreeSet::new();
            let mut last = BTreeSet::new();
            for _ in 0..500 {
                last.clear();
                let mut probes = tokio::task::JoinSet::new();
                for _ in 0..(cpus.len() * 8) {
                    probes.spawn(async {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        allowed_cpus()
                    });
                }
                while let Some(Ok(set)) = probes.join_next().await {
                    last.insert(set);
                }
                workers.extend(last.iter().filter(|s| s.len() == 1).cloned());
                if workers.len() == cpus.len() && last.iter().all(|s| s.len() == 1) {
                    break;
                }
            }
            // Started from a pinned worker, as the stack's SQLite reads and file work are.
            let blocking = tokio::spawn(async { tokio::task::spawn_blocking(allowed_cpus).await })
                .await
                .expect("task")
                .expect("blocking task");
            (workers, last, blocking)
        });
        let pinned: BTreeSet<Vec<usize>> = cpus.iter().map(|&c| vec![c]).collect();
        assert_eq!(workers, pinned, "each worker on its own CPU");
        assert!(
            last.iter().all(|s| s.len() == 1),
            "a worker still unpinned: {last:?}"
        );
        assert_eq!(blocking, cpus, "a blocking thread may use every CPU");
    }

    #[test]
    fn nothing_is_pinned_with_one_cpu_allowed() {
        // On a thread of its own, held to one CPU: the builder is left alone.
        let cpus = allowed_cpus();
        let Some(&first) = cpus.first() else {
            eprintln!("skipped: CPU affinity is not available here");
            return;
        };
        std::thread::spawn(move || {
            assert!(bind_current_thread(&[first]));
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            assert_eq!(pin_workers(&mut builder, || {}), None);
        })
        .join()
        .expect("thread");
    }
}
