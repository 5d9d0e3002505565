//! Where a place stands on its line's admission curve ([`LinePace`]): a fixed room's curve is
//! one point at the opening, which every API instance computes alike from its clock; an
//! auto-paced room's latest point is read from the store ([`super::pacer`] turns it).

use crate::domain::{LinePace, UnixMillis};

/// Where a place stands at a moment: admitted, or how many are ahead and about how long until
/// its turn (whole seconds, rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The place may buy.
    Admitted,
    /// Still waiting.
    Waiting {
        /// Places still to be admitted before this one.
        ahead: u64,
        /// Seconds until this place is admitted, at the line's current pace.
        wait_s: u64,
    },
}

/// `place`'s turn at `now` on the curve through `pace`.
pub fn turn(place: u64, now: UnixMillis, pace: &LinePace) -> Turn {
    let admitted = pace.admitted_by(now);
    if place < admitted {
        return Turn::Admitted;
    }
    let ahead = place - admitted;
    Turn::Waiting {
        ahead,
        wait_s: (ahead + 1).div_ceil(u64::from(pace.rate_at(now).max(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_waits_its_turn() {
        // 1 s after opening at 100/s: places 0..99 admitted.
        let pace = LinePace::opening(UnixMillis(1_000), 100);
        assert_eq!(turn(99, UnixMillis(2_000), &pace), Turn::Admitted);
        assert_eq!(
            turn(100, UnixMillis(2_000), &pace),
            Turn::Waiting {
                ahead: 0,
                wait_s: 1
            }
        );
        assert_eq!(
            turn(1_000, UnixMillis(2_000), &pace),
            Turn::Waiting {
                ahead: 900,
                wait_s: 10
            }
        );
        // Slowed to 10/s at 2 s: the wait follows the new pace.
        let slow = pace.turned(UnixMillis(2_000), 10);
        assert_eq!(
            turn(1_000, UnixMillis(2_000), &slow),
            Turn::Waiting {
                ahead: 900,
                wait_s: 91
            }
        );
        assert_eq!(turn(99, UnixMillis(2_000), &slow), Turn::Admitted);
    }
}
