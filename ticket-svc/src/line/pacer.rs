//! Automatic pacing: how an auto-paced room's admission rate follows the workers.
//!
//! Every [`TICK`] the API instances read the workers' [`Backlog`] from the queue (purchases
//! queued, purchases decided ever) and the one that records the next point of the line's curve
//! first (a compare-and-set in the store) turns it:
//! - the workers' lag is the work queued over how fast they decide, in seconds;
//! - over [`HIGH_LAG_S`] buyers are let in faster than purchases are decided (or the workers
//!   stopped): the rate drops to [`DRAIN`] of what the workers decide, so the queue drains
//!   (to the minimum when they decide nothing);
//! - under [`LOW_LAG_S`], with the queue not growing, the rate grows by [`GROWTH`] (or, after a
//!   drain, straight back to [`DRAIN`] of what the workers were seen deciding), up to a ceiling
//!   of [`HEADROOM`] times the fastest deciding seen (and at least the room's starting rate):
//!   with no sign that the workers could take more, the line does not race ahead of them;
//! - otherwise it holds.
//!
//! A change is recorded [`LEAD`] ahead of its time, as a point that also names the rate before
//! it: every instance reads the curve every second, so all of them admit by the same curve at
//! every moment (an instance that could not read the store for longer admits by the curve it
//! last read).
//!
//! Rises are multiplicative steps, as congestion control probes: the admitted visitors'
//! purchases reach the queue some seconds after their admission, so each step is one the next
//! reading can correct. Falls are anchored on the measured deciding rate rather than
//! compounded, so a backlog that takes several readings to drain does not spiral the rate
//! down. A line never goes back: a fall slows what is admitted next, and places already
//! admitted stay admitted.
//! Rates stay within the room's bounds ([`WaitingRoom::MIN_ADMIT_PER_S`] to
//! [`WaitingRoom::MAX_ADMIT_PER_S`]).

use std::time::Duration;

use crate::domain::WaitingRoom;
use crate::queue::Backlog;

/// How often a line's rate may change: the age a curve's latest point must reach before an
/// instance turns it.
pub const TICK: Duration = Duration::from_secs(2);
/// How far ahead of its decision a change takes effect: more than an API's refresh of the
/// curve (a second), so that every instance has read the new point before it applies, and
/// not more than a [`TICK`], so that a point takes effect before the next is decided.
pub const LEAD: Duration = Duration::from_millis(1_500);
/// Seconds of queued work over which the rate is cut.
pub const HIGH_LAG_S: f64 = 2.0;
/// Seconds of queued work under which the rate grows.
pub const LOW_LAG_S: f64 = 0.5;
/// After a fall, the rate as a share of what the workers decide: a little under it, so the
/// queue drains while they stay busy.
pub const DRAIN: f64 = 0.9;
/// What a rise multiplies the rate by.
pub const GROWTH: f64 = 1.25;
/// The ceiling of a rise, as a multiple of the fastest deciding seen: admitted visitors who do
/// not all buy need admissions faster than the workers decide, but not without bound.
pub const HEADROOM: f64 = 4.0;

/// What one reading of the queue says about the workers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Purchases queued and not decided.
    pub queued: u64,
    /// Purchases decided a second, since the previous reading.
    pub decided_per_s: f64,
    /// The fastest `decided_per_s` this pacer has read.
    pub peak_decided_per_s: f64,
    /// Whether the queue grew since the previous reading by more than a twentieth of a
    /// second's deciding: purchases arrive faster than they are decided.
    pub queue_growing: bool,
}

impl Reading {
    /// The queued work, in seconds of deciding at the current speed (at least one a second, so
    /// that a queue with stopped workers reads as a long lag).
    pub fn lag_s(&self) -> f64 {
        self.queued as f64 / self.decided_per_s.max(1.0)
    }
}

/// Turns the queue's backlogs, read over time, into [`Reading`]s: one per API instance, for
/// every auto-paced line it serves.
#[derive(Debug, Default)]
pub struct Pacer {
    /// The previous backlog and when it was read.
    last: Option<(i64, Backlog)>,
    peak_decided_per_s: f64,
}

impl Pacer {
    /// Notes the backlog read at `now_ms`; the reading, from the second backlog on (a rate
    /// needs two). A clock that did not advance, or a decided count that went back (another
    /// queue, a reset broker), starts over.
    pub fn observe(&mut self, now_ms: i64, backlog: Backlog) -> Option<Reading> {
        let (at_ms, last) = self.last.replace((now_ms, backlog))?;
        if now_ms <= at_ms || backlog.decided < last.decided {
            return None;
        }
        let decided_per_s =
            (backlog.decided - last.decided) as f64 * 1000.0 / (now_ms - at_ms) as f64;
        self.peak_decided_per_s = self.peak_decided_per_s.max(decided_per_s);
        let slack = (decided_per_s / 20.0).max(10.0);
        Some(Reading {
            queued: backlog.queued,
            decided_per_s,
            peak_decided_per_s: self.peak_decided_per_s,
            queue_growing: backlog.queued as f64 > last.queued as f64 + slack,
        })
    }
}

/// The rate after `current` for a room that started at `start`, given `reading`.
pub fn next_rate(reading: &Reading, current: u32, start: u32) -> u32 {
    let lag = reading.lag_s();
    let rate = f64::from(current);
    let draining = (DRAIN * reading.decided_per_s).floor();
    // Whole visitors a second: a fall rounds down and a rise up, so that a rise from 1 moves.
    let next = if lag > HIGH_LAG_S {
        rate.min(draining)
    } else if lag < LOW_LAG_S && !reading.queue_growing {
        let ceiling = f64::from(start).max(HEADROOM * reading.peak_decided_per_s);
        // Never lowered by a rise: a rate above the ceiling (the room's start, say) holds.
        (rate * GROWTH)
            .ceil()
            .max(draining)
            .min(ceiling.floor())
            .max(rate)
    } else {
        rate
    };
    let bounded = next.clamp(
        f64::from(WaitingRoom::MIN_ADMIT_PER_S),
        f64::from(WaitingRoom::MAX_ADMIT_PER_S),
    );
    // In range by the clamp: the cast neither truncates nor wraps.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let r = bounded as u32;
    r
}

#[cfg(test)]
#[path = "pacer_tests.rs"]
mod tests;
