//! The rush over time: per-second buckets of requests, answers and latencies, and samples of the
//! event's `sold` count. Pure (no I/O, no clock): callers pass the offset from the rush's start.
//!
//! Invariants: a [`Second`] is a fixed-size value (no heap), so recording never allocates; each
//! crowd slot fills one local [`Second`] and flushes it into the shared [`Timeline`] only when
//! the second changes, so the hot path takes no lock. Offsets past [`Timeline::MAX_SECONDS`] are
//! counted in the last bucket, so a timeline never grows without bound. The per-second latencies
//! are a log-linear histogram with 16 sub-buckets per power of two (quantiles within 1/16 of the
//! true value, reported as the bucket's upper edge); the run-wide figures use the exact HDR
//! histogram in the report.

use std::time::Duration;

/// Sub-buckets per power of two (16 → a bucket is at most 1/16 of its value wide).
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Latencies are clamped below 2^30 µs (about 18 minutes; the crowd caps them at 10).
const MAX_EXP: u32 = 29;
const BUCKETS: usize = (MAX_EXP as usize - SUB_BITS as usize + 2) * SUB;

/// A log-linear latency histogram in microseconds with a fixed number of `u32` counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyBuckets {
    counts: [u32; BUCKETS],
    total: u64,
}

impl Default for LatencyBuckets {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            total: 0,
        }
    }
}

/// The bucket holding `us` (values below 16 µs are exact).
fn bucket_of(us: u64) -> usize {
    let v = us.min((1 << (MAX_EXP + 1)) - 1);
    if v < SUB as u64 {
        // Exact below 16: `v` fits in usize.
        return usize::try_from(v).unwrap_or(0);
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB as u64 - 1);
    (exp - SUB_BITS + 1) as usize * SUB + usize::try_from(sub).unwrap_or(0)
}

/// The largest value bucket `i` holds.
fn upper_edge(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let exp = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    ((SUB as u64 + sub + 1) << (exp - SUB_BITS)) - 1
}

impl LatencyBuckets {
    /// Counts one latency.
    pub fn record(&mut self, us: u64) {
        if let Some(c) = self.counts.get_mut(bucket_of(us)) {
            *c = c.saturating_add(1);
            self.total += 1;
        }
    }

    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    /// Latencies counted.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The latency at quantile `q` (0..=1) as its bucket's upper edge, or `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let q = if q.is_finite() {
            q.clamp(0.0, 1.0)
        } else {
            1.0
        };
        // The rank of the wanted value, 1-based: at least the first, at most the last.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(upper_edge(i));
            }
        }
        None
    }
}

/// One second of the rush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Second {
    /// Requests sent (counted in the second they were due or sent).
    pub sent: u64,
    /// Purchases accepted for the first time (the first 202 of a buyer), by answer time.
    pub accepted: u64,
    /// Answers other than 202 (400s, 409s, 503s…), by answer time.
    pub other: u64,
    /// Requests that got no HTTP answer, by failure time.
    pub errors: u64,
    /// Latencies of the answers in this second.
    pub latency: LatencyBuckets,
}

impl Second {
    /// Adds another second's counts.
    pub fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.other += other.other;
        self.errors += other.errors;
        self.latency.add(&other.latency);
    }

    /// True when nothing happened.
    pub fn is_empty(&self) -> bool {
        self.sent == 0 && self.accepted == 0 && self.other == 0 && self.errors == 0
    }
}

/// The event's `sold` count at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoldSample {
    /// Since the rush's start.
    pub at: Duration,
    /// Tickets sold then.
    pub sold: u32,
}

/// The whole rush, second by second (index = whole seconds since the start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    seconds: Vec<Second>,
}

impl Timeline {
    /// The most seconds a timeline holds (six hours); later offsets count in the last one.
    pub const MAX_SECONDS: usize = 6 * 3600;

    /// The bucket index for an offset from the start.
    pub fn index(at: Duration) -> usize {
        usize::try_from(at.as_secs())
            .unwrap_or(usize::MAX)
            .min(Self::MAX_SECONDS - 1)
    }

    /// Adds one second's counts at `index` (clamped to the last bucket).
    pub fn add(&mut self, index: usize, second: &Second) {
        let index = index.min(Self::MAX_SECONDS - 1);
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        if let Some(s) = self.seconds.get_mut(index) {
            s.add(second);
        }
    }

    /// Adds a whole timeline.
    pub fn merge(&mut self, other: &Self) {
        for (i, s) in other.seconds.iter().enumerate() {
            self.add(i, s);
        }
    }

    /// The seconds, from the start.
    pub fn seconds(&self) -> &[Second] {
        &self.seconds
    }
}

/// What one crowd slot fills between flushes: the current second, kept inline.
#[derive(Debug, Default)]
pub struct SlotSeconds {
    index: Option<usize>,
    current: Second,
}

impl SlotSeconds {
    /// The bucket for `at`, handing the previous second to `flush` when `at` is in another one.
    pub fn at(&mut self, at: Duration, flush: impl FnOnce(usize, &Second)) -> &mut Second {
        let index = Timeline::index(at);
        if self.index != Some(index) {
            self.take(flush);
            self.index = Some(index);
        }
        &mut self.current
    }

    /// Hands the current second to `flush` (if anything happened in it) and clears it.
    pub fn take(&mut self, flush: impl FnOnce(usize, &Second)) {
        if let Some(i) = self.index
            && !self.current.is_empty()
        {
            flush(i, &self.current);
        }
        self.current = Second::default();
        self.index = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_hold_their_values() {
        let mut last = 0;
        for v in (0..5_000u64).chain([65_535, 1 << 20, 600_000_000, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v} → {b}");
            assert!(b >= last, "buckets grow with values");
            last = b;
            let v = v.min((1 << (MAX_EXP + 1)) - 1);
            assert!(upper_edge(b) >= v, "{v} in {b} ≤ {}", upper_edge(b));
            assert!(
                upper_edge(b) - v <= v / 16 + 1,
                "{v}: edge {}",
                upper_edge(b)
            );
        }
    }

    #[test]
    fn quantiles_come_from_the_counts() {
        let mut h = LatencyBuckets::default();
        assert_eq!(h.quantile_us(0.5), None);
        for v in 1..=100 {
            h.record(v * 1_000);
        }
        let p50 = h.quantile_us(0.5).unwrap();
        assert!((50_000..=53_200).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99).unwrap();
        assert!((99_000..=103_000).contains(&p99), "{p99}");
        assert_eq!(h.quantile_us(0.0), h.quantile_us(0.001));
        assert_eq!(h.len(), 100);
    }

    #[test]
    fn slots_flush_when_the_second_changes_and_timelines_merge() {
        let mut t = Timeline::default();
        let mut slot = SlotSeconds::default();
        slot.at(Duration::from_millis(100), |i, s| t.add(i, s)).sent += 1;
        slot.at(Duration::from_millis(900), |i, s| t.add(i, s))
            .accepted += 1;
        assert!(t.seconds().is_empty(), "nothing flushed within a second");
        slot.at(Duration::from_millis(2_100), |i, s| t.add(i, s))
            .other += 1;
        slot.take(|i, s| t.add(i, s));
        let s = t.seconds();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].sent, s[0].accepted), (1, 1));
        assert!(s[1].is_empty());
        assert_eq!(s[2].other, 1);

        let mut both = t.clone();
        both.merge(&t);
        assert_eq!(both.seconds()[0].sent, 2);
        let mut far = Timeline::default();
        far.add(usize::MAX, &s[0]);
        assert_eq!(far.seconds().len(), Timeline::MAX_SECONDS);
        assert_eq!(Timeline::index(Duration::MAX), Timeline::MAX_SECONDS - 1);
    }
}
