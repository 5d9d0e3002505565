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
//! - an event with a room has an `opens_at`
//!   ([`EventSpec::with_waiting_room`](super::EventSpec::with_waiting_room)): the line forms
//!   before the sale opens, so a sale open from the start has nothing to wait for.

use std::fmt;

use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::Serialize;

use super::error::DomainError;

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
        })
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
            serde_json::json!({"admit_per_s": 25, "sealed_size": 12, "proof_of_work_bits": 0})
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
            serde_json::json!({"admit_per_s": 25, "sealed_size": 12, "proof_of_work_bits": 0})
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
