//! An event's waiting room: a fair line in front of the sale.
//!
//! Visitors who arrive before the sale opens wait in a pre-queue; when the line opens they are
//! shuffled with the event's [`LineSeed`], so arriving first before the opening buys no place,
//! and then admitted [`WaitingRoom::admit_per_s`] a second. This module holds the room's
//! settings; the line itself is built elsewhere.
//!
//! Invariants of a [`WaitingRoom`]:
//! - `admit_per_s` lies in [`WaitingRoom::MIN_ADMIT_PER_S`] to [`WaitingRoom::MAX_ADMIT_PER_S`]
//!   ([`WaitingRoom::new`] and [`WaitingRoom::with_seed`] check it; the stores hold a CHECK
//!   of at least 1);
//! - the seed is a secret: it is never printed ([`LineSeed`]'s `Debug` shows `LineSeed(..)`)
//!   and never serialized (a room in JSON is `{"admit_per_s": .., "sealed_size": ..}`; a
//!   [`LineSeed`] has no `Serialize` at all). Whoever knows it can predict the shuffle;
//! - `sealed_size` is `None` until the line opens, then the pre-queue's size, recorded once and
//!   never changed: the first API instance to seal the line decides it for every instance
//!   ([`crate::store::Store::seal_line`]);
//! - `pacing` is [`Pacing::Fixed`] (the counter moves at `admit_per_s` for the whole sale) or
//!   [`Pacing::Auto`] (it starts at `admit_per_s` and follows the workers' backlog; each change
//!   is a [`LinePace`], a point of the admission curve, recorded in the store so that every API
//!   instance admits alike);
//! - an event with a room has an `opens_at`
//!   ([`EventSpec::with_waiting_room`](super::EventSpec::with_waiting_room)): the line forms
//!   before the sale opens, so a sale open from the start has nothing to wait for.

use std::fmt;

use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::Serialize;

use super::error::DomainError;
use super::window::UnixMillis;

/// The secret that shuffles an event's pre-queue: 32 bytes from the operating system's CSPRNG.
/// Its `Debug` hides the bytes, and it has no `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct LineSeed(pub [u8; 32]);

impl LineSeed {
    /// A seed's length, in bytes (the stores hold a CHECK of the same).
    pub const LEN: usize = 32;

    /// A fresh seed from the operating system's CSPRNG (`getrandom(2)` on Linux).
    ///
    /// # Panics
    /// Only if the operating system cannot supply randomness and never could for this process:
    /// a refused read falls back to rand's thread-local CSPRNG (ChaCha, seeded from the
    /// operating system earlier), which panics if it was never seeded. A line that cannot be
    /// shuffled unpredictably must not be shuffled at all.
    pub fn random() -> Self {
        let mut bytes = [0; Self::LEN];
        if OsRng.try_fill_bytes(&mut bytes).is_err() {
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        }
        Self(bytes)
    }
}

impl fmt::Debug for LineSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LineSeed(..)")
    }
}

/// An event's waiting room (see the module docs). In JSON `{"admit_per_s": 100,
/// "sealed_size": null}`: the seed is never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingRoom {
    /// Visitors admitted per second, [`WaitingRoom::MIN_ADMIT_PER_S`] to
    /// [`WaitingRoom::MAX_ADMIT_PER_S`].
    pub admit_per_s: u32,
    /// The secret that shuffles the pre-queue; never serialized.
    #[serde(skip)]
    pub seed: LineSeed,
    /// The pre-queue's size once the line opened (`None` before); recorded once, never changed.
    pub sealed_size: Option<u64>,
    /// Leading zero bits a joiner's proof of work must have (0: none asked), up to
    /// [`WaitingRoom::MAX_PROOF_OF_WORK_BITS`].
    pub proof_of_work_bits: u8,
    /// How the admission rate moves: fixed, or following the workers' backlog.
    pub pacing: Pacing,
}

/// How a room's admission rate moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pacing {
    /// `admit_per_s` for the whole sale.
    #[default]
    Fixed,
    /// `admit_per_s` at the opening, then faster or slower as the workers keep up or fall
    /// behind (`crate::line::pacer`).
    Auto,
}

impl Pacing {
    /// `fixed` or `auto`, as JSON and the stores spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Auto => "auto",
        }
    }

    /// The pacing spelled `text`.
    ///
    /// # Errors
    /// [`DomainError::BadPacing`] for anything but `fixed` and `auto`.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        match text {
            "fixed" => Ok(Self::Fixed),
            "auto" => Ok(Self::Auto),
            _ => Err(DomainError::BadPacing),
        }
    }
}

/// A point of a line's admission curve: by `at`, `admitted_milli` thousandths of a place are
/// admitted (exact: a rate times milliseconds), from then on
/// `per_s` more a second, and until then `per_s_before` a second (the curve's previous
/// segment, so that a point recorded ahead of its time describes the curve up to it too). A
/// fixed room's curve is one point, at the opening; an auto-paced room's gets a new point at
/// each change of rate, continuing where it was, so no place admitted before a change is
/// taken back by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePace {
    /// When the rate changes.
    pub at: UnixMillis,
    /// Thousandths of places admitted by `at`: whole places are `admitted_milli / 1000`, and
    /// the fraction keeps a point read early and the point it continues agreeing to the place.
    pub admitted_milli: u64,
    /// Places admitted a second from `at` on, [`WaitingRoom::MIN_ADMIT_PER_S`] to
    /// [`WaitingRoom::MAX_ADMIT_PER_S`].
    pub per_s: u32,
    /// Places admitted a second before `at` (0 at the opening: nothing before it).
    pub per_s_before: u32,
}

impl LinePace {
    /// A point as a store holds it.
    ///
    /// # Errors
    /// [`DomainError::BadLinePace`] for a negative `admitted_milli`, a rate out of range, or a
    /// rate before out of 0 to [`WaitingRoom::MAX_ADMIT_PER_S`].
    pub fn new(
        at: UnixMillis,
        admitted_milli: i64,
        per_s: i64,
        per_s_before: i64,
    ) -> Result<Self, DomainError> {
        let rate = |r: i64, min: u32| {
            u32::try_from(r)
                .ok()
                .filter(|r| (min..=WaitingRoom::MAX_ADMIT_PER_S).contains(r))
                .ok_or(DomainError::BadLinePace)
        };
        Ok(Self {
            at,
            admitted_milli: u64::try_from(admitted_milli).map_err(|_| DomainError::BadLinePace)?,
            per_s: rate(per_s, WaitingRoom::MIN_ADMIT_PER_S)?,
            per_s_before: rate(per_s_before, 0)?,
        })
    }

    /// The curve's first point: nothing admitted at the opening, then `per_s` a second.
    pub fn opening(opens_at: UnixMillis, per_s: u32) -> Self {
        Self {
            at: opens_at,
            admitted_milli: 0,
            per_s,
            per_s_before: 0,
        }
    }

    /// Places admitted by `now`: places `0..n` may buy.
    pub fn admitted_by(&self, now: UnixMillis) -> u64 {
        self.admitted_milli_by(now) / 1000
    }

    /// Thousandths of places admitted by `now`: a rate a second times milliseconds, exactly.
    fn admitted_milli_by(&self, now: UnixMillis) -> u64 {
        // u128: a year at a million a second fits many times over.
        let milli = |ms: i64, per_s: u32| {
            let n = u128::from(ms.unsigned_abs()) * u128::from(per_s);
            u64::try_from(n).unwrap_or(u64::MAX)
        };
        if now >= self.at {
            let since = now.0.saturating_sub(self.at.0);
            self.admitted_milli.saturating_add(milli(since, self.per_s))
        } else {
            let until = self.at.0.saturating_sub(now.0);
            self.admitted_milli
                .saturating_sub(milli(until, self.per_s_before))
        }
    }

    /// The rate in force at `now`.
    pub fn rate_at(&self, now: UnixMillis) -> u32 {
        if now >= self.at {
            self.per_s
        } else {
            self.per_s_before
        }
    }

    /// The next point: from `at` on (now, or a moment ahead so that every reader has it by
    /// then), the curve goes on from where it stands at `at`, at `per_s`.
    pub fn turned(&self, at: UnixMillis, per_s: u32) -> Self {
        Self {
            at,
            admitted_milli: self.admitted_milli_by(at),
            per_s,
            per_s_before: self.rate_at(at),
        }
    }
}

impl WaitingRoom {
    /// The slowest admission rate, visitors per second.
    pub const MIN_ADMIT_PER_S: u32 = 1;
    /// The fastest admission rate, visitors per second.
    pub const MAX_ADMIT_PER_S: u32 = 1_000_000;
    /// The hardest proof of work a room may ask: 2^28 hashes, minutes on a phone.
    pub const MAX_PROOF_OF_WORK_BITS: u8 = 28;

    /// A room admitting `admit_per_s` visitors a second, with a fresh seed
    /// ([`LineSeed::random`]) and its line not sealed yet.
    ///
    /// # Errors
    /// [`DomainError::BadAdmitRate`] for a rate outside [`WaitingRoom::MIN_ADMIT_PER_S`] to
    /// [`WaitingRoom::MAX_ADMIT_PER_S`].
    pub fn new(admit_per_s: i64) -> Result<Self, DomainError> {
        Self::with_seed(admit_per_s, LineSeed::random())
    }

    /// [`WaitingRoom::new`] with a given seed: a room as a store holds it (with `sealed_size`
    /// set by the caller), or a reproducible one in tests.
    ///
    /// # Errors
    /// As [`WaitingRoom::new`].
    pub fn with_seed(admit_per_s: i64, seed: LineSeed) -> Result<Self, DomainError> {
        let admit_per_s = u32::try_from(admit_per_s)
            .ok()
            .filter(|a| (Self::MIN_ADMIT_PER_S..=Self::MAX_ADMIT_PER_S).contains(a))
            .ok_or(DomainError::BadAdmitRate {
                min: Self::MIN_ADMIT_PER_S,
                max: Self::MAX_ADMIT_PER_S,
            })?;
        Ok(Self {
            admit_per_s,
            seed,
            sealed_size: None,
            proof_of_work_bits: 0,
            pacing: Pacing::Fixed,
        })
    }

    /// This room, paced `pacing`.
    pub fn with_pacing(self, pacing: Pacing) -> Self {
        Self { pacing, ..self }
    }

    /// This room, asking each joiner for a proof of work of `bits` leading zero bits (about
    /// 2^bits hashes; 0 asks none).
    ///
    /// # Errors
    /// [`DomainError::BadProofOfWorkBits`] outside 0 to
    /// [`WaitingRoom::MAX_PROOF_OF_WORK_BITS`].
    pub fn with_proof_of_work(self, bits: i64) -> Result<Self, DomainError> {
        let proof_of_work_bits = u8::try_from(bits)
            .ok()
            .filter(|b| *b <= Self::MAX_PROOF_OF_WORK_BITS)
            .ok_or(DomainError::BadProofOfWorkBits {
                max: Self::MAX_PROOF_OF_WORK_BITS,
            })?;
        Ok(Self {
            proof_of_work_bits,
            ..self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, EventId, EventSpec, SaleWindow, UnixMillis};

    /// 2026-12-24T18:00:00Z.
    const CHRISTMAS_EVE: UnixMillis = UnixMillis(1_798_135_200_000);

    fn windowed_spec() -> EventSpec {
        let window = SaleWindow::new(Some(CHRISTMAS_EVE), None).unwrap();
        EventSpec::new("DJ night", 100, 4)
            .unwrap()
            .with_window(window)
    }

    #[test]
    fn the_admission_rate_is_one_to_a_million_a_second() {
        for ok in [1, 2, 999_999, 1_000_000] {
            let room = WaitingRoom::new(ok).unwrap();
            assert_eq!(i64::from(room.admit_per_s), ok);
            assert_eq!(room.sealed_size, None);
        }
        let bad = DomainError::BadAdmitRate {
            min: 1,
            max: 1_000_000,
        };
        for rate in [
            0,
            -1,
            1_000_001,
            i64::from(u32::MAX) + 1,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(WaitingRoom::new(rate), Err(bad.clone()), "{rate}");
        }
        assert_eq!(
            bad.to_string(),
            "waiting_room.admit_per_s must be between 1 and 1000000"
        );
        assert_eq!(
            (WaitingRoom::MIN_ADMIT_PER_S, WaitingRoom::MAX_ADMIT_PER_S),
            (1, 1_000_000)
        );
    }

    #[test]
    fn a_room_keeps_the_seed_it_is_given() {
        let seed = LineSeed([7; 32]);
        let room = WaitingRoom::with_seed(50, seed.clone()).unwrap();
        assert_eq!(
            room,
            WaitingRoom {
                admit_per_s: 50,
                seed,
                sealed_size: None,
                proof_of_work_bits: 0,
                pacing: Pacing::Fixed,
            }
        );
        assert!(WaitingRoom::with_seed(0, LineSeed([7; 32])).is_err());
    }

    #[test]
    fn a_proof_of_work_asks_0_to_28_bits() {
        for bits in [0, 1, 20, 28] {
            let room = WaitingRoom::new(10)
                .unwrap()
                .with_proof_of_work(bits)
                .unwrap();
            assert_eq!(i64::from(room.proof_of_work_bits), bits);
        }
        for bits in [-1, 29, 255, 1 << 40] {
            assert_eq!(
                WaitingRoom::new(10).unwrap().with_proof_of_work(bits),
                Err(DomainError::BadProofOfWorkBits { max: 28 })
            );
        }
    }

    #[test]
    fn a_waiting_room_needs_opens_at() {
        let room = WaitingRoom::new(100).unwrap();
        let plain = EventSpec::new("DJ night", 100, 4).unwrap();
        assert_eq!(plain.waiting_room, None);
        assert_eq!(
            plain.clone().with_waiting_room(room.clone()),
            Err(DomainError::WaitingRoomNeedsOpensAt)
        );
        // A window that only closes does not do either.
        let closes_only = SaleWindow::new(None, Some(CHRISTMAS_EVE)).unwrap();
        assert_eq!(
            plain
                .with_window(closes_only)
                .with_waiting_room(room.clone()),
            Err(DomainError::WaitingRoomNeedsOpensAt)
        );
        assert_eq!(
            DomainError::WaitingRoomNeedsOpensAt.to_string(),
            "a waiting room needs opens_at: the line forms before the sale opens"
        );

        let spec = windowed_spec().with_waiting_room(room.clone()).unwrap();
        assert_eq!(spec.waiting_room, Some(room));
        let without = windowed_spec();
        assert_eq!(
            (
                spec.name.as_str(),
                spec.tickets,
                spec.max_per_buyer,
                spec.window
            ),
            (
                without.name.as_str(),
                without.tickets,
                without.max_per_buyer,
                without.window
            )
        );
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let seed = LineSeed([0xab; 32]);
        assert_eq!(format!("{seed:?}"), "LineSeed(..)");
        assert_eq!(format!("{seed:#?}"), "LineSeed(..)");
        let room = WaitingRoom::with_seed(10, seed).unwrap();
        let shown = format!("{room:?} {room:#?}");
        assert!(shown.contains("LineSeed(..)"), "{shown}");
        for needle in ["171", "ab", "AB", "[", "0x"] {
            assert!(!shown.contains(needle), "{needle} in {shown}");
        }
    }

    #[test]
    fn an_event_in_json_shows_its_room_but_never_the_seed() {
        let seed = LineSeed(std::array::from_fn(|i| u8::try_from(i).unwrap() + 200));
        let room = WaitingRoom {
            sealed_size: Some(12),
            ..WaitingRoom::with_seed(25, seed.clone()).unwrap()
        };
        let event = Event {
            id: EventId(1),
            name: "DJ night".into(),
            tickets: 10,
            max_per_buyer: 2,
            sold: 0,
            window: SaleWindow::new(Some(CHRISTMAS_EVE), None).unwrap(),
            waiting_room: Some(room.clone()),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json["waiting_room"],
            serde_json::json!({"admit_per_s": 25, "sealed_size": 12, "proof_of_work_bits": 0, "pacing": "fixed"})
        );
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains("seed"), "{text}");
        // No run of the seed's bytes, in any of the forms JSON could write them.
        let as_numbers = seed.0.iter().map(u8::to_string).collect::<Vec<_>>();
        assert!(!text.contains(&as_numbers[..4].join(",")), "{text}");
        let as_hex: String = seed.0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&as_hex[..8]), "{text}");
        assert_eq!(
            serde_json::to_value(&room).unwrap(),
            serde_json::json!({"admit_per_s": 25, "sealed_size": 12, "proof_of_work_bits": 0, "pacing": "fixed"})
        );
        let roomless = Event {
            waiting_room: None,
            ..event
        };
        assert_eq!(
            serde_json::to_value(&roomless).unwrap()["waiting_room"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn pacing_is_fixed_or_auto() {
        for p in [Pacing::Fixed, Pacing::Auto] {
            assert_eq!(Pacing::parse(p.as_str()), Ok(p));
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
        for bad in ["", "Auto", "fast", "fixed "] {
            assert_eq!(Pacing::parse(bad), Err(DomainError::BadPacing), "{bad:?}");
        }
        assert_eq!(WaitingRoom::new(5).unwrap().pacing, Pacing::Fixed);
        assert_eq!(
            WaitingRoom::new(5)
                .unwrap()
                .with_pacing(Pacing::Auto)
                .pacing,
            Pacing::Auto
        );
    }

    #[test]
    fn the_admission_curve_continues_where_it_turns() {
        let open = LinePace::opening(UnixMillis(1_000), 100);
        assert_eq!(open.admitted_by(UnixMillis(999)), 0, "before the opening");
        assert_eq!(open.admitted_by(UnixMillis(1_010)), 1, "10 ms at 100/s");
        assert_eq!(open.admitted_by(UnixMillis(2_000)), 100);
        // Slowed to 10/s at 2 s: what was admitted stays admitted.
        let slow = open.turned(UnixMillis(2_000), 10);
        assert_eq!(
            slow,
            LinePace {
                at: UnixMillis(2_000),
                admitted_milli: 100_000,
                per_s: 10,
                per_s_before: 100
            }
        );
        assert_eq!(slow.admitted_by(UnixMillis(3_000)), 110);
        // Before its time, a point follows the curve it continues: whoever reads it early
        // admits as those who have not read it yet.
        for t in [1_000, 1_009, 1_010, 1_500, 1_999, 2_000] {
            assert_eq!(
                slow.admitted_by(UnixMillis(t)),
                open.admitted_by(UnixMillis(t)),
                "{t}"
            );
        }
        assert_eq!(slow.admitted_by(UnixMillis(0)), 0, "not below nothing");
        assert_eq!(
            (
                slow.rate_at(UnixMillis(1_999)),
                slow.rate_at(UnixMillis(2_000))
            ),
            (100, 10)
        );
        let top = LinePace::opening(UnixMillis(i64::MIN), WaitingRoom::MAX_ADMIT_PER_S);
        assert_eq!(
            top.admitted_by(UnixMillis(i64::MAX)),
            u64::MAX / 1000,
            "saturates"
        );
        assert_eq!(
            LinePace::new(UnixMillis(5), 7, 3, 0),
            Ok(LinePace {
                at: UnixMillis(5),
                admitted_milli: 7,
                per_s: 3,
                per_s_before: 0
            })
        );
        for (admitted, per_s, before) in [
            (-1, 3, 1),
            (0, 0, 1),
            (0, 1_000_001, 1),
            (0, -5, 1),
            (0, 3, -1),
            (0, 3, 1_000_001),
        ] {
            assert_eq!(
                LinePace::new(UnixMillis(5), admitted, per_s, before),
                Err(DomainError::BadLinePace),
                "{admitted} at {per_s}/s, {before}/s before"
            );
        }
    }

    #[test]
    fn random_seeds_differ() {
        let (a, b) = (LineSeed::random(), LineSeed::random());
        assert_ne!(a, b);
        assert_ne!(a.0, [0; 32]);
        assert_ne!(
            WaitingRoom::new(1).unwrap().seed,
            WaitingRoom::new(1).unwrap().seed
        );
    }
}
