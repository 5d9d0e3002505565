//! Backend selection: pure algorithms over a slice of candidates.
//!
//! A [`Selector`] is built for one backend set and rebuilt whenever the set changes (it is
//! swapped together with the set, so its per-backend state always lines up with the slice it
//! is given). Selectors do no I/O and never block beyond a short uncontended mutex for their
//! own small state; they see a backend only through [`Candidate`].

mod candidate;
mod least_conn;
mod p2c;
mod round_robin;

pub use candidate::Candidate;
pub use least_conn::LeastConn;
pub use p2c::PowerOfTwo;
pub use round_robin::SmoothWeightedRoundRobin;

use crate::config::Strategy;

/// One of the strategies, ready to pick from a fixed-size backend set.
#[derive(Debug)]
pub enum Selector {
    /// Smooth weighted round-robin.
    RoundRobin(SmoothWeightedRoundRobin),
    /// Weighted least in-flight requests.
    LeastConn(LeastConn),
    /// Power of two random choices.
    P2c(PowerOfTwo),
}

impl Selector {
    /// A selector for a set of `len` backends; `seed` makes p2c reproducible.
    pub fn new(strategy: Strategy, len: usize, seed: Option<u64>) -> Self {
        match strategy {
            Strategy::RoundRobin => Self::RoundRobin(SmoothWeightedRoundRobin::new(len)),
            Strategy::LeastConn => Self::LeastConn(LeastConn::new()),
            Strategy::P2c => Self::P2c(PowerOfTwo::new(seed)),
        }
    }

    /// Picks the index of one eligible candidate, or `None` when none is eligible.
    pub fn pick<C: Candidate>(
        &self,
        items: &[C],
        eligible: impl Fn(usize, &C) -> bool,
    ) -> Option<usize> {
        match self {
            Self::RoundRobin(s) => s.pick(items, eligible),
            Self::LeastConn(s) => s.pick(items, eligible),
            Self::P2c(s) => s.pick(items, eligible),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Candidate;

    /// A plain candidate for unit tests.
    #[derive(Debug, Clone, Copy)]
    pub struct Fake {
        pub weight: u32,
        pub in_flight: u64,
    }

    impl Candidate for Fake {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn in_flight(&self) -> u64 {
            self.in_flight
        }
    }

    pub fn weights(ws: &[u32]) -> Vec<Fake> {
        ws.iter()
            .map(|&weight| Fake {
                weight,
                in_flight: 0,
            })
            .collect()
    }
}
