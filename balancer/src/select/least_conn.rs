//! Weighted least-connections: the eligible backend with the fewest in-flight requests per
//! unit of weight. Ties are broken fairly by starting each scan one position further along,
//! so equally idle backends take turns instead of the first one taking everything.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::candidate::{Candidate, less_loaded};

/// Least-connections state: only the rotating tie-break offset.
#[derive(Debug, Default)]
pub struct LeastConn {
    next_start: AtomicUsize,
}

impl LeastConn {
    /// A fresh selector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks the least loaded eligible backend.
    pub fn pick<C: Candidate>(
        &self,
        items: &[C],
        eligible: impl Fn(usize, &C) -> bool,
    ) -> Option<usize> {
        let n = items.len();
        if n == 0 {
            return None;
        }
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let Some(item) = items.get(i) else { continue };
            if !eligible(i, item) {
                continue;
            }
            match best.and_then(|b| items.get(b)) {
                Some(b) if !less_loaded(item, b) => {}
                _ => best = Some(i),
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::test_support::{Fake, weights};

    #[test]
    fn prefers_idle_backend() {
        let items = vec![
            Fake {
                weight: 1,
                in_flight: 5,
            },
            Fake {
                weight: 1,
                in_flight: 0,
            },
            Fake {
                weight: 1,
                in_flight: 2,
            },
        ];
        let lc = LeastConn::new();
        for _ in 0..10 {
            assert_eq!(lc.pick(&items, |_, _| true), Some(1));
        }
    }

    #[test]
    fn weight_scales_load() {
        // 4 in flight at weight 4 is lighter than 2 at weight 1.
        let items = vec![
            Fake {
                weight: 4,
                in_flight: 4,
            },
            Fake {
                weight: 1,
                in_flight: 2,
            },
        ];
        assert_eq!(LeastConn::new().pick(&items, |_, _| true), Some(0));
    }

    #[test]
    fn ties_rotate() {
        let items = weights(&[1, 1, 1]);
        let lc = LeastConn::new();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[lc.pick(&items, |_, _| true).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        assert_eq!(lc.pick(&items, |_, _| false), None);
    }
}
