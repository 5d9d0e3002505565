//! Signed tokens: a JSON payload with an expiry, MAC'd with the [`KeyRing`]'s signing key.
//!
//! Text form: `v1.KEY_ID.PAYLOAD.MAC`, where PAYLOAD is the JSON `{"exp": UNIX_SECONDS, ...}` in
//! URL-safe base64 without padding and MAC is HMAC-SHA-256 over
//! `ticketrush/PURPOSE/v1.KEY_ID.PAYLOAD`, also base64. The purpose inside the MAC keeps a token
//! made for one use (a login challenge) from being accepted as another (a session). There is no
//! algorithm field to negotiate: v1 is HMAC-SHA-256, and a later format is a new prefix.
//!
//! Tokens are signed, not encrypted: their payloads are readable by whoever holds them, so they
//! carry nothing the holder may not see.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::TokenError;
use super::keys::{KeyCheck, KeyRing};

/// The longest token accepted, in bytes: larger input is refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 2048;

const VERSION: &str = "v1";

/// What a token is for; part of what its MAC covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A buyer's session.
    Session,
    /// A login challenge, exchanged with its code for a session.
    Login,
    /// A visitor's place in an event's line.
    Queue,
    /// An admitted visitor's leave to buy once.
    Permit,
    /// A proof-of-work challenge for joining a line.
    Challenge,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Login => "login",
            Self::Queue => "queue",
            Self::Permit => "permit",
            Self::Challenge => "challenge",
        }
    }
}

#[derive(Serialize)]
struct SignedRef<'a, T> {
    exp: i64,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Deserialize)]
struct Signed<T> {
    exp: i64,
    #[serde(flatten)]
    body: T,
}

impl KeyRing {
    /// `body` signed for `purpose`, valid until `expires_at` (Unix seconds).
    pub fn seal<T: Serialize>(&self, purpose: Purpose, body: &T, expires_at: i64) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        let json = serde_json::to_vec(&SignedRef {
            exp: expires_at,
            body,
        })
        .unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let signed = format!("{VERSION}.{}.{payload}", self.signing_id());
        let (_, tag) = self.sign(&mac_input(purpose, &signed));
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The body of a token signed for `purpose` by a key of this ring, if it has not expired by
    /// `now` (Unix seconds), with its expiry.
    ///
    /// # Errors
    /// See [`TokenError`]; the signature is checked before anything in the payload is read.
    pub fn open<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        token: &str,
        now: i64,
    ) -> Result<(T, i64), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (signed, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = signed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(payload)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Malformed)?;
        match self.verify(id, &mac_input(purpose, signed), &mac) {
            KeyCheck::Valid => {}
            KeyCheck::UnknownKey => return Err(TokenError::UnknownKey),
            KeyCheck::BadSignature => return Err(TokenError::BadSignature),
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let opened: Signed<T> = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if now >= opened.exp {
            return Err(TokenError::Expired);
        }
        Ok((opened.body, opened.exp))
    }
}

fn mac_input(purpose: Purpose, signed: &str) -> Vec<u8> {
    format!("ticketrush/{}/{signed}", purpose.as_str()).into_bytes()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Body {
        who: String,
        n: u32,
    }

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(&[spec]).unwrap()
    }

    const A: &str = "a:0123456789abcdef0123456789abcdef";
    const B: &str = "b:fedcba9876543210fedcba9876543210";

    fn body() -> Body {
        Body {
            who: "x".into(),
            n: 7,
        }
    }

    #[test]
    fn a_sealed_token_opens_until_it_expires() {
        let keys = ring(A);
        let t = keys.seal(Purpose::Session, &body(), 100);
        assert_eq!(
            keys.open::<Body>(Purpose::Session, &t, 99),
            Ok((body(), 100))
        );
        assert_eq!(
            keys.open::<Body>(Purpose::Session, &t, 100),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_for_another_purpose_or_from_another_key_is_refused() {
        let keys = ring(A);
        let t = keys.seal(Purpose::Login, &body(), 100);
        assert_eq!(
            keys.open::<Body>(Purpose::Session, &t, 0),
            Err(TokenError::BadSignature)
        );
        // Same id, another secret: forged.
        let forger = ring("a:0000000000000000000000000000000000");
        let forged = forger.seal(Purpose::Login, &body(), 100);
        assert_eq!(
            keys.open::<Body>(Purpose::Login, &forged, 0),
            Err(TokenError::BadSignature)
        );
        // Another deployment's key: foreign.
        let foreign = ring(B).seal(Purpose::Login, &body(), 100);
        assert_eq!(
            keys.open::<Body>(Purpose::Login, &foreign, 0),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = ring(A);
        for t in [
            "",
            "v1",
            "v1.a.b",
            "v2.a.e30.AAAA",
            "v1.a.e30.!!",
            &"x".repeat(5000),
        ] {
            assert_eq!(
                keys.open::<Body>(Purpose::Login, t, 0),
                Err(TokenError::Malformed),
                "{t:.40}"
            );
        }
    }

    proptest! {
        /// Changing any one character of a token makes it fail to open.
        #[test]
        fn any_altered_character_is_refused(n in any::<u32>(), who in "[a-z@.]{0,40}", at in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.-]") {
            let keys = ring(A);
            let t = keys.seal(Purpose::Session, &Body { who, n }, i64::MAX);
            let i = at.index(t.len());
            let c = c.chars().next().unwrap();
            prop_assume!(t.as_bytes()[i] != c as u8);
            let mut altered = t.clone().into_bytes();
            altered[i] = c as u8;
            let altered = String::from_utf8(altered).unwrap();
            // Base64's last character may carry unused bits; an edit there can decode the same.
            let same_bytes = URL_SAFE_NO_PAD.decode(altered.rsplit('.').next().unwrap()).ok()
                == URL_SAFE_NO_PAD.decode(t.rsplit('.').next().unwrap()).ok()
                && altered.rsplit_once('.').map(|p| p.0) == t.rsplit_once('.').map(|p| p.0);
            prop_assume!(!same_bytes);
            prop_assert!(keys.open::<Body>(Purpose::Session, &altered, 0).is_err());
        }
    }
}
