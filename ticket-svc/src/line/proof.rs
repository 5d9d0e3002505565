//! Proof of work on joining a line: a room may ask each joiner to find a number whose SHA-256,
//! with the challenge the API signed for that visitor, starts with `bits` zero bits (about
//! 2^bits hashes). It makes a million scripted joins cost a million times that in CPU. It does
//! not stop a patient bot with one identity (one join is one place anyway), nor a farm that
//! pays the CPU: it prices joins, it does not tell people from programs.
//!
//! The challenge is a signed token naming the event, the visitor and a nonce, valid
//! [`CHALLENGE_TTL_S`]: solved for one visitor, it opens no line for another, and it is not
//! stored (a visitor joining twice is one place already).

use ring::digest;
use serde::{Deserialize, Serialize};

use super::error::LineError;
use crate::access::{BuyerId, KeyRing, Purpose};
use crate::domain::EventId;

/// How long a challenge may be solved and used.
pub const CHALLENGE_TTL_S: i64 = 300;

/// What a challenge token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The event whose line it opens.
    #[serde(rename = "e")]
    pub event: EventId,
    /// The visitor it was made for.
    #[serde(rename = "v")]
    pub visitor: BuyerId,
    /// Makes each challenge different.
    #[serde(rename = "n")]
    pub nonce: String,
}

impl Challenge {
    /// The token, valid until `expires_at` (Unix seconds).
    pub fn seal(&self, keys: &KeyRing, expires_at: i64) -> String {
        keys.seal(Purpose::Challenge, self, expires_at)
    }
}

/// Whether `solution` proves `bits` of work for the challenge `token`, which must open for
/// `event` and `visitor` at `now` (Unix seconds).
///
/// # Errors
/// [`LineError::BadProof`]: a challenge that does not open, another event's or visitor's, or a
/// solution short of the bits.
pub fn check(
    keys: &KeyRing,
    token: &str,
    solution: u64,
    bits: u8,
    event: EventId,
    visitor: &BuyerId,
    now: i64,
) -> Result<(), LineError> {
    let (challenge, _): (Challenge, i64) = keys
        .open(Purpose::Challenge, token, now)
        .map_err(|e| LineError::BadProof(e.to_string()))?;
    if challenge.event != event || challenge.visitor != *visitor {
        return Err(LineError::BadProof(
            "the challenge is another event's or another visitor's".into(),
        ));
    }
    if zero_bits(token, solution) < u32::from(bits) {
        return Err(LineError::BadProof(format!(
            "the solution's hash does not start with {bits} zero bits"
        )));
    }
    Ok(())
}

/// Leading zero bits of SHA-256(`token` ":" `solution`).
pub fn zero_bits(token: &str, solution: u64) -> u32 {
    let hash = digest::digest(&digest::SHA256, format!("{token}:{solution}").as_bytes());
    let mut bits = 0;
    for byte in hash.as_ref() {
        bits += byte.leading_zeros();
        if *byte != 0 {
            break;
        }
    }
    bits
}

/// The first solution of `bits` for `token` (what a joiner's page computes).
pub fn solve(token: &str, bits: u8) -> u64 {
    (0..u64::MAX)
        .find(|s| zero_bits(token, *s) >= u32::from(bits))
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Email;

    fn keys() -> KeyRing {
        KeyRing::parse(&["k:0123456789abcdef0123456789abcdef"]).unwrap()
    }

    fn ann() -> BuyerId {
        BuyerId::of(&Email::parse("ann@example.org").unwrap())
    }

    #[test]
    fn a_solution_proves_the_bits_for_its_visitor_and_event_only() {
        let c = Challenge {
            event: EventId(1),
            visitor: ann(),
            nonce: "n1".into(),
        }
        .seal(&keys(), 100);
        let s = solve(&c, 10);
        assert!(zero_bits(&c, s) >= 10);
        assert_eq!(check(&keys(), &c, s, 10, EventId(1), &ann(), 50), Ok(()));
        // The first solution of 10 bits is most likely short of 20.
        let short = (0..).find(|x| zero_bits(&c, *x) < 20).unwrap();
        assert!(check(&keys(), &c, short, 20, EventId(1), &ann(), 50).is_err());
        let bob = BuyerId::of(&Email::parse("bob@example.org").unwrap());
        assert!(check(&keys(), &c, s, 10, EventId(1), &bob, 50).is_err());
        assert!(check(&keys(), &c, s, 10, EventId(2), &ann(), 50).is_err());
        assert!(
            check(&keys(), &c, s, 10, EventId(1), &ann(), 100).is_err(),
            "expired"
        );
    }

    #[test]
    fn zero_bits_count_across_bytes() {
        // Found by search: hashes of "t:N" starting with 0x00 then a byte below 0x80.
        let t = "t";
        let eight_plus = (0..).find(|s| zero_bits(t, *s) >= 9).unwrap();
        let h = digest::digest(&digest::SHA256, format!("{t}:{eight_plus}").as_bytes());
        assert_eq!(h.as_ref()[0], 0);
        assert!(h.as_ref()[1] < 0x80);
    }
}
