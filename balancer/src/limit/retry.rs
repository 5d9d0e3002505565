//! The retry budget: retries may add at most `ratio` extra load over recent traffic.
//!
//! Every request deposits `ratio` of a token (the balance is capped, so a quiet period cannot
//! save up a storm); every retry withdraws a whole token or is refused. A small initial
//! balance lets a fresh balancer retry its first failures. Balances are kept in thousandths
//! of a token in one atomic, so the hot path takes no lock.

use std::sync::atomic::{AtomicI64, Ordering};

const SCALE: f64 = 1000.0;
const ONE: i64 = 1000;

/// Shared retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    balance: AtomicI64,
    deposit: i64,
    cap: i64,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per request, holding at most `cap_tokens` unused
    /// retries, starting with `initial_tokens`.
    pub fn new(ratio: f64, initial_tokens: u32, cap_tokens: u32) -> Self {
        let cap = i64::from(cap_tokens) * ONE;
        Self {
            balance: AtomicI64::new((i64::from(initial_tokens) * ONE).min(cap)),
            // ratio is validated to 0..=10, so this cannot overflow.
            deposit: (ratio.clamp(0.0, 10.0) * SCALE).round() as i64,
            cap,
        }
    }

    /// Records one request.
    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some((b + self.deposit).min(self.cap))
            });
    }

    /// Takes one retry if the budget allows it.
    pub fn try_withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= ONE).then_some(b - ONE)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_bounds_retries() {
        let b = RetryBudget::new(0.2, 0, 100);
        assert!(!b.try_withdraw());
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[test]
    fn initial_and_cap() {
        let b = RetryBudget::new(1.0, 2, 3);
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        for _ in 0..100 {
            b.deposit();
        }
        let mut n = 0;
        while b.try_withdraw() {
            n += 1;
        }
        assert_eq!(n, 3);
    }
}
