//! The signing keys: an operator's [`KeyRing`], the first key signing and every key verifying,
//! so a key is rotated without logging anybody out (add the new key first, move it to the
//! front, drop the old one once its tokens have expired).

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::error::AccessConfigError;

/// The shortest secret accepted, in bytes: HMAC-SHA-256's full strength.
pub const MIN_SECRET_BYTES: usize = 32;
/// The longest key id, in bytes (it travels in every token).
pub const MAX_KEY_ID_BYTES: usize = 16;

/// One key: an id that tokens name, and its HMAC-SHA-256 key.
struct SigningKey {
    id: String,
    key: hmac::Key,
}

/// Every key the API accepts tokens from; the first one signs.
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("ids", &ids).finish()
    }
}

impl KeyRing {
    /// Keys from `ID:SECRET` specs (each value may hold several, comma-separated, as the
    /// `TICKET_SIGNING_KEYS` variable does): the first signs.
    ///
    /// # Errors
    /// No key; a spec without `:`; an id that is not 1 to 16 of `[A-Za-z0-9_-]`; a secret under
    /// 32 bytes; an id given twice.
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, AccessConfigError> {
        let mut keys: Vec<SigningKey> = Vec::new();
        for spec in specs
            .iter()
            .flat_map(|s| s.as_ref().split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (id, secret) = spec
                .split_once(':')
                .ok_or(AccessConfigError::KeyWithoutId)?;
            if !valid_key_id(id) {
                return Err(AccessConfigError::BadKeyId { id: id.to_owned() });
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(AccessConfigError::ShortSecret {
                    id: id.to_owned(),
                    bytes: secret.len(),
                });
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(AccessConfigError::DuplicateKeyId { id: id.to_owned() });
            }
            keys.push(SigningKey {
                id: id.to_owned(),
                key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            });
        }
        if keys.is_empty() {
            return Err(AccessConfigError::NoSigningKey);
        }
        Ok(Self { keys })
    }

    /// A fresh spec `ID:SECRET` (a random id and 32 random bytes as hex), for a stack that
    /// makes its own keys.
    ///
    /// # Errors
    /// The OS's random source failed.
    pub fn generate_spec() -> Result<String, AccessConfigError> {
        let id = hex(&random_bytes::<4>().ok_or(AccessConfigError::NoRandomness)?);
        let secret = hex(&random_bytes::<32>().ok_or(AccessConfigError::NoRandomness)?);
        Ok(format!("{id}:{secret}"))
    }

    /// The id of the key that signs.
    pub fn signing_id(&self) -> &str {
        self.signing().id.as_str()
    }

    fn signing(&self) -> &SigningKey {
        // `parse` never builds an empty ring.
        &self.keys[0]
    }

    /// The MAC of `message` under the signing key, with that key's id.
    pub(super) fn sign(&self, message: &[u8]) -> (&str, hmac::Tag) {
        let k = self.signing();
        (k.id.as_str(), hmac::sign(&k.key, message))
    }

    /// The MAC of `message` under the key named `id`, if the ring has it.
    pub(super) fn sign_with(&self, id: &str, message: &[u8]) -> Option<hmac::Tag> {
        self.key(id).map(|k| hmac::sign(k, message))
    }

    /// Whether `tag` is `message`'s MAC under the key named `id` (constant time).
    pub(super) fn verify(&self, id: &str, message: &[u8], tag: &[u8]) -> KeyCheck {
        match self.key(id) {
            None => KeyCheck::UnknownKey,
            Some(k) if hmac::verify(k, message, tag).is_ok() => KeyCheck::Valid,
            Some(_) => KeyCheck::BadSignature,
        }
    }

    fn key(&self, id: &str) -> Option<&hmac::Key> {
        self.keys.iter().find(|k| k.id == id).map(|k| &k.key)
    }
}

/// What [`KeyRing::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyCheck {
    Valid,
    UnknownKey,
    BadSignature,
}

fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `N` bytes from the OS's CSPRNG (`None`: it failed).
pub(super) fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let old = KeyRing::parse(&[format!("old:{SECRET}")]).unwrap();
        let both = KeyRing::parse(&[format!("new:{SECRET}x,old:{SECRET}")]).unwrap();
        assert_eq!(both.signing_id(), "new");
        let (id, tag) = old.sign(b"m");
        assert_eq!(both.verify(id, b"m", tag.as_ref()), KeyCheck::Valid);
        assert_eq!(both.verify(id, b"n", tag.as_ref()), KeyCheck::BadSignature);
        let (id, tag) = both.sign(b"m");
        assert_eq!(old.verify(id, b"m", tag.as_ref()), KeyCheck::UnknownKey);
    }

    #[test]
    fn bad_specs_are_refused_with_what_is_wrong() {
        let cases: [(&[&str], &str); 6] = [
            (&[], "no signing key"),
            (&[" , "], "no signing key"),
            (&["nocolon"], "ID:SECRET"),
            (&["bad id:0123456789abcdef0123456789abcdef"], "key id"),
            (&["k:short"], "at least 32"),
            (
                &[
                    "k:0123456789abcdef0123456789abcdef",
                    "k:0123456789abcdef0123456789abcdef",
                ],
                "twice",
            ),
        ];
        for (specs, expected) in cases {
            let err = KeyRing::parse(specs).unwrap_err().to_string();
            assert!(err.contains(expected), "{specs:?}: {err}");
        }
    }

    #[test]
    fn generated_specs_parse_and_differ() {
        let a = KeyRing::generate_spec().unwrap();
        let b = KeyRing::generate_spec().unwrap();
        assert_ne!(a, b);
        KeyRing::parse(&[a.as_str(), b.as_str()]).unwrap();
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let ring = KeyRing::parse(&[format!("k1:{SECRET}")]).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("k1") && !shown.contains(SECRET), "{shown}");
    }
}
