//! The order of an event's line: who stands where.
//!
//! Every join is a record of the event's line log; its offset is the visitor's *sequence*. The
//! line opens with a seal record at offset P (P joins came before it, the pre-queue):
//! - a pre-queue visitor's place is `shuffle[seq]`, a uniformly random permutation of 0..P drawn
//!   from the event's secret seed, so arriving early gives no edge over arriving on time;
//! - a visitor who joined after the seal (offset > P) stands in arrival order, behind the whole
//!   pre-queue: place `seq - 1` (the seal takes no place).
//!
//! The permutation is Fisher–Yates over ChaCha20 seeded with the event's seed, each index drawn
//! by rejection sampling (exactly uniform, no modulo bias). ChaCha20's output is fixed by its
//! specification and the drawing is ours, so every API instance, of any version, computes the
//! same order from the same seed and P, with nothing shared but those two numbers.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::domain::LineSeed;

/// The most visitors a pre-queue may hold (places are `u32` in the shuffle: 16 GiB of them
/// would not fit anyway).
pub const MAX_PRE_QUEUE: u64 = u32::MAX as u64;

/// An opened line's order: the pre-queue's size and its shuffle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineOrder {
    shuffle: Vec<u32>,
}

impl LineOrder {
    /// The order of a line sealed after `pre_queue` joins, shuffled with `seed`. Takes time and
    /// memory in proportion to the pre-queue (4 bytes a visitor; about 10 ms a million).
    pub fn new(seed: &LineSeed, pre_queue: u64) -> Self {
        let n = usize::try_from(pre_queue.min(MAX_PRE_QUEUE)).unwrap_or(usize::MAX);
        let mut shuffle: Vec<u32> = (0..n)
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        let mut rng = ChaCha20Rng::from_seed(seed.0);
        for i in (1..shuffle.len()).rev() {
            let j = below(&mut rng, i as u64 + 1);
            shuffle.swap(i, usize::try_from(j).unwrap_or(i));
        }
        Self { shuffle }
    }

    /// How many joined before the line opened.
    pub fn pre_queue(&self) -> u64 {
        self.shuffle.len() as u64
    }

    /// The place (from 0) of the visitor whose join has sequence `seq`; `None` for the seal's
    /// own offset, which is nobody's.
    pub fn place(&self, seq: u64) -> Option<u64> {
        let pre = self.pre_queue();
        match seq.cmp(&pre) {
            std::cmp::Ordering::Less => usize::try_from(seq)
                .ok()
                .and_then(|i| self.shuffle.get(i))
                .map(|p| u64::from(*p)),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(seq - 1),
        }
    }
}

/// A uniform draw from `0..n` (`n >= 1`): rejection sampling, so no value is favoured.
fn below(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(n: u8) -> LineSeed {
        let mut s = [0u8; 32];
        s[0] = n;
        s[31] = n.wrapping_mul(7);
        LineSeed(s)
    }

    #[test]
    fn the_pre_queue_is_a_permutation_and_later_joins_stand_in_arrival_order() {
        let order = LineOrder::new(&seed(1), 1000);
        let mut places: Vec<u64> = (0..1000).map(|s| order.place(s).unwrap()).collect();
        places.sort_unstable();
        assert_eq!(places, (0..1000).collect::<Vec<_>>(), "each place once");
        assert_eq!(order.place(1000), None, "the seal is nobody's");
        assert_eq!(order.place(1001), Some(1000));
        assert_eq!(order.place(1050), Some(1049));
        assert_ne!(
            (0..20).map(|s| order.place(s)).collect::<Vec<_>>(),
            (0..20).map(Some).collect::<Vec<_>>(),
            "shuffled"
        );
    }

    #[test]
    fn one_seed_one_order_on_every_instance() {
        assert_eq!(LineOrder::new(&seed(3), 500), LineOrder::new(&seed(3), 500));
        assert_ne!(LineOrder::new(&seed(3), 500), LineOrder::new(&seed(4), 500));
        // Pinned: an order must never change under a sale (a new version mid-sale, or another
        // instance). These are the places of visitors 0 to 9 of a pre-queue of 10 under seed 9.
        let pinned: Vec<u64> = (0..10)
            .map(|s| LineOrder::new(&seed(9), 10).place(s).unwrap())
            .collect();
        assert_eq!(pinned, PINNED_ORDER);
    }

    const PINNED_ORDER: [u64; 10] = [3, 8, 6, 2, 4, 1, 7, 9, 5, 0];

    #[test]
    fn an_empty_pre_queue_is_arrival_order_after_the_seal() {
        let order = LineOrder::new(&seed(1), 0);
        assert_eq!(order.place(0), None);
        assert_eq!(order.place(1), Some(0));
    }

    /// Uniformity: over many seeds, where visitor i lands is uniform over the places (χ² per
    /// visitor), and so is the place visitor 0 and visitor 1 take together (pairs: a shuffle
    /// that only rotated would pass the first test).
    #[test]
    fn the_shuffle_is_uniform_over_many_seeds() {
        const N: usize = 8;
        const RUNS: usize = 40_000;
        let mut counts = [[0u32; N]; N];
        let mut pairs = vec![0u32; N * N];
        for run in 0..RUNS {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(run as u64).to_le_bytes());
            let order = LineOrder::new(&LineSeed(s), N as u64);
            let places: Vec<usize> = (0..N as u64)
                .map(|v| usize::try_from(order.place(v).unwrap()).unwrap())
                .collect();
            for (v, p) in places.iter().enumerate() {
                counts[v][*p] += 1;
            }
            pairs[places[0] * N + places[1]] += 1;
        }
        // χ² with N-1 = 7 degrees of freedom: 24.32 is the 0.001 tail.
        let expected = RUNS as f64 / N as f64;
        for (v, row) in counts.iter().enumerate() {
            let chi2: f64 = row
                .iter()
                .map(|c| (f64::from(*c) - expected).powi(2) / expected)
                .sum();
            assert!(chi2 < 24.32, "visitor {v}: χ² {chi2:.1} over {row:?}");
        }
        // Pairs: N·(N-1) = 56 possible (p0 ≠ p1), 55 degrees of freedom: 93.2 is the 0.001 tail.
        let expected = RUNS as f64 / (N * (N - 1)) as f64;
        let chi2: f64 = (0..N * N)
            .filter(|i| i / N != i % N)
            .map(|i| (f64::from(pairs[i]) - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 93.2, "pairs: χ² {chi2:.1}");
        assert!(
            (0..N).all(|p| pairs[p * N + p] == 0),
            "two visitors, one place"
        );
    }
}
