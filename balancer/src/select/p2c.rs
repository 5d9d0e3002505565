//! Power of two random choices: draw two distinct eligible backends at random and take the
//! one with less in-flight load per unit of weight. Nearly as good as least-conn at spreading
//! load, without every picker herding onto the same "least" backend. The RNG is seedable so
//! tests and benchmarks are reproducible.

use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::candidate::{Candidate, less_loaded};

/// Power-of-two-choices state: the random generator.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: Mutex<SmallRng>,
}

impl PowerOfTwo {
    /// A selector seeded with `seed`, or from the OS when `None`.
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        Self {
            rng: Mutex::new(rng),
        }
    }

    /// Picks one of two random eligible backends, the less loaded.
    pub fn pick<C: Candidate>(
        &self,
        items: &[C],
        eligible: impl Fn(usize, &C) -> bool,
    ) -> Option<usize> {
        let count = items
            .iter()
            .enumerate()
            .filter(|(i, c)| eligible(*i, c))
            .count();
        let nth = |n: usize| {
            items
                .iter()
                .enumerate()
                .filter(|(i, c)| eligible(*i, c))
                .nth(n)
                .map(|(i, _)| i)
        };
        match count {
            0 => None,
            1 => nth(0),
            _ => {
                let (a, b) = {
                    let mut rng = self
                        .rng
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let a = rng.random_range(0..count);
                    let mut b = rng.random_range(0..count - 1);
                    if b >= a {
                        b += 1;
                    }
                    (a, b)
                };
                let (ia, ib) = (nth(a)?, nth(b)?);
                let (ca, cb) = (items.get(ia)?, items.get(ib)?);
                Some(if less_loaded(cb, ca) { ib } else { ia })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::test_support::{Fake, weights};

    #[test]
    fn spreads_over_all_backends() {
        let items = weights(&[1, 1, 1, 1]);
        let p = PowerOfTwo::new(Some(7));
        let mut counts = [0; 4];
        for _ in 0..4000 {
            counts[p.pick(&items, |_, _| true).unwrap()] += 1;
        }
        for c in counts {
            assert!(c > 500, "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn never_picks_the_most_loaded_of_three() {
        let items = vec![
            Fake {
                weight: 1,
                in_flight: 0,
            },
            Fake {
                weight: 1,
                in_flight: 1,
            },
            Fake {
                weight: 1,
                in_flight: 9,
            },
        ];
        let p = PowerOfTwo::new(Some(1));
        for _ in 0..200 {
            assert_ne!(p.pick(&items, |_, _| true), Some(2));
        }
    }

    #[test]
    fn seeded_runs_repeat() {
        let items = weights(&[1, 2, 3]);
        let run = |seed| {
            let p = PowerOfTwo::new(Some(seed));
            (0..50)
                .map(|_| p.pick(&items, |_, _| true).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
    }

    #[test]
    fn single_and_none() {
        let items = weights(&[1, 1]);
        let p = PowerOfTwo::new(Some(3));
        assert_eq!(p.pick(&items, |i, _| i == 1), Some(1));
        assert_eq!(p.pick(&items, |_, _| false), None);
    }
}
