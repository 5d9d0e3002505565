//! Per-client-IP token bucket rate limiting.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` tokens per second; a request
//! takes one token or is refused with the time until the next token (the `Retry-After`).
//! The table of buckets is bounded: past `max_clients` entries, buckets that have refilled
//! completely (they hold no information) are swept; if the table is still full, new clients
//! are let through untracked rather than refused (failing open keeps a flood of distinct
//! addresses from locking out everyone).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// One client's bucket. Pure: time comes in as an argument.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: u32) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.last = now;
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant, rate: f64, burst: u32) -> Result<(), Duration> {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if rate <= 0.0 {
            Err(Duration::from_secs(1))
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    /// The bucket would be full at `now` (it can be forgotten without changing behaviour).
    pub fn is_full_at(&self, now: Instant, rate: f64, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= f64::from(burst)
    }
}

/// Whether a request may pass the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allow,
    /// Refuse; the client may retry after this long.
    Limit {
        /// Time until a token is available.
        retry_after: Duration,
    },
}

/// The bounded table of per-client buckets.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: DashMap<IpAddr, TokenBucket>,
    max_clients: usize,
}

/// Default bound on tracked clients.
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

impl RateLimiter {
    /// An empty table tracking at most `max_clients` clients.
    pub fn new(max_clients: usize) -> Self {
        Self {
            buckets: DashMap::new(),
            max_clients: max_clients.max(1),
        }
    }

    /// Charges one request to `client`. `rate` ≤ 0 disables limiting.
    pub fn check(&self, client: IpAddr, now: Instant, rate: f64, burst: u32) -> RateDecision {
        if rate <= 0.0 {
            return RateDecision::Allow;
        }
        if let Some(mut bucket) = self.buckets.get_mut(&client) {
            return match bucket.try_take(now, rate, burst) {
                Ok(()) => RateDecision::Allow,
                Err(retry_after) => RateDecision::Limit { retry_after },
            };
        }
        if self.buckets.len() >= self.max_clients {
            self.buckets
                .retain(|_, bucket| !bucket.is_full_at(now, rate, burst));
            if self.buckets.len() >= self.max_clients {
                return RateDecision::Allow;
            }
        }
        let mut bucket = TokenBucket::full(burst, now);
        let decision = match bucket.try_take(now, rate, burst) {
            Ok(()) => RateDecision::Allow,
            Err(retry_after) => RateDecision::Limit { retry_after },
        };
        self.buckets.insert(client, bucket);
        decision
    }

    /// Clients currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// No client is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(3, t0);
        for _ in 0..3 {
            assert!(b.try_take(t0, 2.0, 3).is_ok());
        }
        let wait = b.try_take(t0, 2.0, 3).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.try_take(t0 + Duration::from_millis(499), 2.0, 3).is_err());
        assert!(b.try_take(t0 + Duration::from_millis(1000), 2.0, 3).is_ok());
    }

    #[test]
    fn never_exceeds_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(2, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(b.try_take(later, 10.0, 2).is_ok());
        assert!(b.try_take(later, 10.0, 2).is_ok());
        assert!(b.try_take(later, 10.0, 2).is_err());
    }

    #[test]
    fn limiter_is_per_client_and_bounded() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(rl.check(a, t0, 1.0, 1), RateDecision::Allow);
        assert!(matches!(
            rl.check(a, t0, 1.0, 1),
            RateDecision::Limit { .. }
        ));
        assert_eq!(rl.check(b, t0, 1.0, 1), RateDecision::Allow);
        // Table full, nothing refilled: a new client passes untracked.
        assert_eq!(rl.check(c, t0, 1.0, 1), RateDecision::Allow);
        assert_eq!(rl.len(), 2);
        // Later every bucket is full again and gets swept to make room.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(rl.check(c, later, 1.0, 1), RateDecision::Allow);
        assert!(rl.len() <= 2);
        assert_eq!(rl.check(a, t0, 0.0, 1), RateDecision::Allow);
    }
}
