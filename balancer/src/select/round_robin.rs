//! Smooth weighted round-robin (the algorithm nginx uses).
//!
//! Each pick adds every eligible backend's weight to its running score, takes the highest
//! score, and subtracts the total eligible weight from the winner. Over any window of
//! `sum(weights)` picks each backend is chosen exactly `weight` times, and picks of a heavy
//! backend are spread out rather than bunched (weights 5,1,1 give a a b a c a a, not a a a a a b c).
//! Ineligible backends neither gain nor lose score, so they rejoin without a burst.

use std::sync::Mutex;

use super::candidate::Candidate;

/// Smooth weighted round-robin state for a set of fixed size.
#[derive(Debug)]
pub struct SmoothWeightedRoundRobin {
    current: Mutex<Vec<i64>>,
}

impl SmoothWeightedRoundRobin {
    /// State for `len` backends, all scores zero.
    pub fn new(len: usize) -> Self {
        Self {
            current: Mutex::new(vec![0; len]),
        }
    }

    /// Picks the next eligible backend.
    pub fn pick<C: Candidate>(
        &self,
        items: &[C],
        eligible: impl Fn(usize, &C) -> bool,
    ) -> Option<usize> {
        // A poisoned lock only means another pick panicked mid-update; the scores are still
        // plain integers, so keep using them.
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.len() != items.len() {
            current.resize(items.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (item, score)) in items.iter().zip(current.iter_mut()).enumerate() {
            if !eligible(i, item) {
                continue;
            }
            let w = i64::from(item.weight().max(1));
            *score += w;
            total += w;
            // Strictly greater: ties go to the lower index, which keeps the order stable.
            if best.is_none_or(|(_, s)| *score > s) {
                best = Some((i, *score));
            }
        }
        let (chosen, _) = best?;
        if let Some(score) = current.get_mut(chosen) {
            *score -= total;
        }
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::test_support::weights;

    #[test]
    fn exact_shares_over_a_cycle() {
        let items = weights(&[5, 1, 1]);
        let rr = SmoothWeightedRoundRobin::new(items.len());
        let picks: Vec<usize> = (0..7)
            .map(|_| rr.pick(&items, |_, _| true).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[rr.pick(&items, |_, _| true).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
    }

    #[test]
    fn equal_weights_alternate() {
        let items = weights(&[1, 1, 1]);
        let rr = SmoothWeightedRoundRobin::new(items.len());
        let picks: Vec<usize> = (0..6)
            .map(|_| rr.pick(&items, |_, _| true).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_ineligible_and_none_when_all_out() {
        let items = weights(&[1, 1, 1]);
        let rr = SmoothWeightedRoundRobin::new(items.len());
        for _ in 0..10 {
            assert_ne!(rr.pick(&items, |i, _| i != 1), Some(1));
        }
        assert_eq!(rr.pick(&items, |_, _| false), None);
    }
}
