//! How fast a line moves: an admission counter that every API instance computes alike from its
//! clock, with nothing shared but the event's `opens_at` and `admit_per_s`.

/// Places admitted by `now_ms` in a line that opened at `opens_at_ms` and admits `per_s` a
/// second: places `0..admitted` may buy. None before the line opens.
pub fn admitted(now_ms: i64, opens_at_ms: i64, per_s: u32) -> u64 {
    let open_for_ms = u64::try_from(now_ms.saturating_sub(opens_at_ms)).unwrap_or(0);
    // u128: a year at a million a second fits many times over.
    let n = u128::from(open_for_ms) * u128::from(per_s) / 1000;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Where a place stands at `now_ms`: admitted, or how many are ahead and about how long until
/// its turn (whole seconds, rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The place may buy.
    Admitted,
    /// Still waiting.
    Waiting {
        /// Places still to be admitted before this one.
        ahead: u64,
        /// Seconds until this place is admitted, at the line's pace.
        wait_s: u64,
    },
}

/// `place`'s turn at `now_ms`.
pub fn turn(place: u64, now_ms: i64, opens_at_ms: i64, per_s: u32) -> Turn {
    let admitted = admitted(now_ms, opens_at_ms, per_s);
    if place < admitted {
        return Turn::Admitted;
    }
    let ahead = place - admitted;
    Turn::Waiting {
        ahead,
        wait_s: (ahead + 1).div_ceil(u64::from(per_s.max(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_advances_at_the_rate_from_the_opening() {
        assert_eq!(admitted(999, 1_000, 100), 0, "closed");
        assert_eq!(admitted(1_000, 1_000, 100), 0);
        assert_eq!(admitted(1_010, 1_000, 100), 1, "10 ms at 100/s");
        assert_eq!(admitted(2_000, 1_000, 100), 100);
        assert_eq!(
            admitted(i64::MAX, i64::MIN, 1_000_000),
            u64::MAX,
            "saturates"
        );
    }

    #[test]
    fn a_place_waits_its_turn() {
        // 1 s after opening at 100/s: places 0..99 admitted.
        assert_eq!(turn(99, 2_000, 1_000, 100), Turn::Admitted);
        assert_eq!(
            turn(100, 2_000, 1_000, 100),
            Turn::Waiting {
                ahead: 0,
                wait_s: 1
            }
        );
        assert_eq!(
            turn(1_000, 2_000, 1_000, 100),
            Turn::Waiting {
                ahead: 900,
                wait_s: 10
            }
        );
    }
}
