//! Logging in: an e-mail address gets a one-time code; the code and the login challenge that
//! came with it make a buyer session. Nothing is stored: the challenge is a signed token naming
//! the address, a random nonce and the expiry, and the code is derived from it with the signing
//! key, so any API instance checks a code another one sent.
//!
//! A code is 8 characters of Crockford's base32 (40 bits). An attacker holding a challenge can
//! only guess online, and each API instance refuses a challenge after [`MAX_WRONG_CODES`] wrong
//! codes: with N instances behind the balancer, 5·N guesses of 2^40 per challenge, and each new
//! challenge sends the real owner an e-mail. A code may be used more than once within its
//! 10 minutes; each use gives the same buyer another session, which is no more than the code's
//! owner may have anyway.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::AccessError;
use super::identity::Email;
use super::keys::{KeyRing, hex, random_bytes};
use super::token::Purpose;

/// Wrong codes one API instance takes for one login challenge before refusing it.
pub const MAX_WRONG_CODES: u8 = 5;
/// Characters in a code.
pub const CODE_CHARS: usize = 8;
/// Crockford's base32: no I, L, O or U, so a code read aloud or retyped survives.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Challenges whose wrong codes one instance remembers.
const TRACKED_CHALLENGES: usize = 100_000;

/// A login challenge's signed payload.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Challenge {
    /// The address the code was sent to.
    pub email: String,
    /// Makes each challenge (and its code) different.
    pub nonce: String,
}

/// A login started: the challenge the client keeps and the code the buyer is sent.
#[derive(Debug)]
pub struct Started {
    /// The signed challenge, sent back with the code.
    pub challenge: String,
    /// The code, for the sender only.
    pub code: String,
    /// When both stop working (Unix seconds).
    pub expires_at: i64,
}

/// Starts a login for `email`, valid for `ttl_s` seconds from `now`.
pub(super) fn start(
    keys: &KeyRing,
    email: &Email,
    now: i64,
    ttl_s: i64,
) -> Result<Started, AccessError> {
    let nonce = hex(&random_bytes::<16>().ok_or(AccessError::NoRandomness)?);
    let expires_at = now.saturating_add(ttl_s);
    let challenge = Challenge {
        email: email.as_str().to_owned(),
        nonce,
    };
    let code = code_for(keys, keys.signing_id(), &challenge, expires_at).unwrap_or_default();
    Ok(Started {
        challenge: keys.seal(Purpose::Login, &challenge, expires_at),
        code,
        expires_at,
    })
}

/// The address a challenge and its code confirm.
pub(super) fn finish(
    keys: &KeyRing,
    attempts: &WrongCodes,
    challenge: &str,
    code: &str,
    now: i64,
) -> Result<Email, AccessError> {
    let (opened, expires_at): (Challenge, i64) = keys
        .open(Purpose::Login, challenge, now)
        .map_err(AccessError::BadLogin)?;
    if attempts.exhausted(&opened.nonce) {
        return Err(AccessError::TooManyAttempts);
    }
    let key_id = key_id_of(challenge);
    let expected = code_for(keys, key_id, &opened, expires_at);
    let given = normalize_code(code);
    if !expected.is_some_and(|e| same_in_constant_time(e.as_bytes(), given.as_bytes())) {
        attempts.record_wrong(&opened.nonce, expires_at, now);
        return Err(AccessError::WrongCode);
    }
    Email::parse(&opened.email)
}

/// Whether `a == b`, in time that depends on the length only (a code's characters cannot be
/// found one at a time by timing the answers).
fn same_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key id a token names (its second field).
fn key_id_of(token: &str) -> &str {
    token.split('.').nth(1).unwrap_or_default()
}

/// The code of a challenge under key `key_id`.
fn code_for(keys: &KeyRing, key_id: &str, c: &Challenge, expires_at: i64) -> Option<String> {
    let message = format!(
        "ticketrush/login-code\n{}\n{}\n{expires_at}",
        c.email, c.nonce
    );
    let tag = keys.sign_with(key_id, message.as_bytes())?;
    Some(
        tag.as_ref()
            .iter()
            .take(CODE_CHARS)
            .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
            .collect(),
    )
}

/// A code as typed, in its canonical form: upper case, spaces and dashes dropped, and the
/// letters Crockford's base32 reads as digits (O as 0, I and L as 1) mapped.
fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .take(CODE_CHARS * 2)
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

/// Wrong codes per login challenge, on this instance: bounded, forgetting challenges as they
/// expire.
#[derive(Debug, Default)]
pub struct WrongCodes {
    by_nonce: Mutex<HashMap<String, (u8, i64)>>,
}

impl WrongCodes {
    fn exhausted(&self, nonce: &str) -> bool {
        self.lock()
            .get(nonce)
            .is_some_and(|(n, _)| *n >= MAX_WRONG_CODES)
    }

    fn record_wrong(&self, nonce: &str, expires_at: i64, now: i64) {
        let mut map = self.lock();
        if map.len() >= TRACKED_CHALLENGES && !map.contains_key(nonce) {
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= TRACKED_CHALLENGES {
                // Under a flood of distinct challenges, forget the oldest half's counts rather
                // than grow without bound: each forgotten challenge gets its 5 guesses again.
                tracing::warn!(
                    tracked = map.len(),
                    "too many login challenges with wrong codes; forgetting some counts"
                );
                let mut expiries: Vec<i64> = map.values().map(|(_, e)| *e).collect();
                expiries.sort_unstable();
                let cut = expiries[expiries.len() / 2];
                map.retain(|_, (_, exp)| *exp > cut);
            }
        }
        map.entry(nonce.to_owned()).or_insert((0, expires_at)).0 += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u8, i64)>> {
        self.by_nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a:0123456789abcdef0123456789abcdef";

    fn keys(spec: &str) -> KeyRing {
        KeyRing::parse(&[spec]).unwrap()
    }

    fn ann() -> Email {
        Email::parse("ann@example.org").unwrap()
    }

    #[test]
    fn the_code_sent_confirms_the_address_on_any_instance() {
        let k = keys(A);
        let s = start(&k, &ann(), 1000, 600).unwrap();
        assert_eq!(s.code.len(), CODE_CHARS);
        assert!(s.code.bytes().all(|b| ALPHABET.contains(&b)));
        // Another instance: its own WrongCodes, the same keys.
        let other = WrongCodes::default();
        assert_eq!(
            finish(&k, &other, &s.challenge, &s.code, 1001).unwrap(),
            ann()
        );
        // Typed in lower case with a dash.
        let typed = format!("{}-{}", &s.code[..4], &s.code[4..]).to_lowercase();
        assert!(finish(&k, &other, &s.challenge, &typed, 1001).is_ok());
    }

    #[test]
    fn a_wrong_code_an_expired_or_forged_challenge_are_refused() {
        let k = keys(A);
        let w = WrongCodes::default();
        let s = start(&k, &ann(), 1000, 600).unwrap();
        assert!(matches!(
            finish(&k, &w, &s.challenge, "00000000", 1001),
            Err(AccessError::WrongCode)
        ));
        assert!(matches!(
            finish(&k, &w, &s.challenge, &s.code, 1600),
            Err(AccessError::BadLogin(_))
        ));
        let forged = keys("a:ffffffffffffffffffffffffffffffff").seal(
            Purpose::Login,
            &Challenge {
                email: "ann@example.org".into(),
                nonce: "n".into(),
            },
            2000,
        );
        assert!(matches!(
            finish(&k, &w, &forged, "00000000", 1001),
            Err(AccessError::BadLogin(_))
        ));
    }

    #[test]
    fn codes_differ_per_login_and_per_key() {
        let k = keys(A);
        let a = start(&k, &ann(), 1000, 600).unwrap();
        let b = start(&k, &ann(), 1000, 600).unwrap();
        assert_ne!(a.code, b.code);
        // A code made under one login does not open another.
        assert!(finish(&k, &WrongCodes::default(), &b.challenge, &a.code, 1001).is_err());
    }

    #[test]
    fn after_five_wrong_codes_even_the_right_one_is_refused() {
        let k = keys(A);
        let w = WrongCodes::default();
        let s = start(&k, &ann(), 1000, 600).unwrap();
        for _ in 0..MAX_WRONG_CODES {
            assert!(matches!(
                finish(&k, &w, &s.challenge, "ZZZZZZZZ", 1001),
                Err(AccessError::WrongCode)
            ));
        }
        assert!(matches!(
            finish(&k, &w, &s.challenge, &s.code, 1001),
            Err(AccessError::TooManyAttempts)
        ));
        // Another login of the same address is not locked out.
        let again = start(&k, &ann(), 1000, 600).unwrap();
        assert!(finish(&k, &w, &again.challenge, &again.code, 1001).is_ok());
    }

    #[test]
    fn a_key_rotated_to_second_place_still_checks_its_codes() {
        let old = keys(A);
        let s = start(&old, &ann(), 1000, 600).unwrap();
        let rotated = KeyRing::parse(&["b:fedcba9876543210fedcba9876543210", A]).unwrap();
        assert!(
            finish(
                &rotated,
                &WrongCodes::default(),
                &s.challenge,
                &s.code,
                1001
            )
            .is_ok()
        );
    }

    #[test]
    fn the_wrong_code_table_stays_bounded() {
        let w = WrongCodes::default();
        for i in 0..(TRACKED_CHALLENGES + 10) {
            w.record_wrong(&i.to_string(), i64::try_from(i).unwrap() + 10, 0);
        }
        assert!(w.lock().len() <= TRACKED_CHALLENGES);
    }
}
