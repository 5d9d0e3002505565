//! Who may do what: buyers are e-mail identities confirmed by a one-time code and carried in a
//! signed session; organizers hold a token the operator configured.
//!
//! - A buyer asks for a code (`POST /login {"email"}`): the API answers with a signed login
//!   challenge and a [`CodeSender`] delivers the code. The challenge and the code make a session
//!   (`POST /sessions`): a signed token naming the buyer's [`BuyerId`], valid for
//!   [`AccessConfig::session_ttl`]. A purchase needs it (`Authorization: Bearer SESSION`), and
//!   the buyer it names is the purchase's buyer: per-buyer limits bind to the identity.
//! - Organizer routes (`POST /events`) need `Authorization: Bearer ORGANIZER_TOKEN`.
//! - Nothing is stored: every API instance holds the same [`KeyRing`], so a token one instance
//!   signed opens on every other, and survives any restart.
//!
//! Layout: `keys` (the ring and rotation), `token` (the signed format), `identity` (e-mail and
//! buyer id), `login` (challenges and codes), `sender` (delivering codes), `organizer`.

mod error;
mod identity;
mod keys;
mod login;
mod organizer;
mod sender;
mod token;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use error::{AccessConfigError, AccessError, TokenError};
pub use identity::{BuyerId, Email, MAX_EMAIL_BYTES};
pub use keys::{KeyRing, MIN_SECRET_BYTES};

/// `N` random bytes from the OS's CSPRNG as hex (`None`: it failed).
pub fn random_hex<const N: usize>() -> Option<String> {
    keys::random_bytes::<N>().map(|b| keys::hex(&b))
}
pub use login::{CODE_CHARS, MAX_WRONG_CODES};
pub use organizer::OrganizerTokens;
pub use sender::{CodeSender, LogSender, LoginCode, SendFuture, WebhookSender, sender_from_spec};
pub use token::{MAX_TOKEN_BYTES, Purpose};

/// The access settings of an API instance.
pub struct AccessConfig {
    /// Signs and checks sessions and login challenges; the same on every instance.
    pub keys: KeyRing,
    /// Who may use organizer routes.
    pub organizers: OrganizerTokens,
    /// Delivers login codes.
    pub sender: Box<dyn CodeSender>,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// How long a login code works.
    pub login_ttl: Duration,
}

impl std::fmt::Debug for AccessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessConfig")
            .field("keys", &self.keys)
            .field("organizers", &self.organizers)
            .field("sender", &self.sender.name())
            .field("session_ttl", &self.session_ttl)
            .field("login_ttl", &self.login_ttl)
            .finish()
    }
}

impl AccessConfig {
    /// The default session length: a sale's day.
    pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
    /// The default life of a login code.
    pub const DEFAULT_LOGIN_TTL: Duration = Duration::from_secs(600);

    /// Settings from an API's flags: `--signing-key` values (`ID:SECRET`, the first signs),
    /// `--organizer-token` values (none: organizer routes off), the `--login-sender` (`log` or
    /// a webhook URL), the session length.
    ///
    /// # Errors
    /// The first bad value, saying what is wrong.
    pub fn from_flags<S: AsRef<str>>(
        signing_keys: &[S],
        organizer_tokens: &[S],
        login_sender: &str,
        session_ttl: Duration,
    ) -> Result<Self, AccessConfigError> {
        let mut config = Self::new(
            KeyRing::parse(signing_keys)?,
            OrganizerTokens::parse(organizer_tokens)?,
        );
        config.sender = sender_from_spec(login_sender)?;
        config.session_ttl = session_ttl;
        Ok(config)
    }

    /// Settings with these keys and organizer tokens, the log sender and the default lengths.
    pub fn new(keys: KeyRing, organizers: OrganizerTokens) -> Self {
        Self {
            keys,
            organizers,
            sender: Box::new(LogSender),
            session_ttl: Self::DEFAULT_SESSION_TTL,
            login_ttl: Self::DEFAULT_LOGIN_TTL,
        }
    }
}

/// A login started, as the buyer's client sees it (the code went to the sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStarted {
    /// The signed challenge, to send back with the code.
    pub challenge: String,
    /// When the code stops working (Unix seconds).
    pub expires_at: i64,
}

/// A buyer's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The bearer token.
    pub token: String,
    /// Who it names.
    pub buyer: BuyerId,
    /// When it ends (Unix seconds).
    pub expires_at: i64,
}

/// A session token's signed payload.
#[derive(Serialize, Deserialize)]
struct SessionClaims {
    /// The buyer.
    sub: BuyerId,
    /// This session's own random id: two logins of one buyer are two sessions (for logs, and
    /// for revoking one alone).
    sid: String,
}

/// The API's gatekeeper: checks credentials, starts and finishes logins.
#[derive(Debug)]
pub struct Access {
    config: AccessConfig,
    wrong_codes: login::WrongCodes,
}

impl Access {
    /// A gatekeeper with these settings.
    pub fn new(config: AccessConfig) -> Self {
        Self {
            config,
            wrong_codes: login::WrongCodes::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AccessConfig {
        &self.config
    }

    /// Starts a login for the address `email` at `now` (Unix seconds) and sends its code.
    ///
    /// # Errors
    /// A malformed address; a sender that failed.
    pub async fn start_login(&self, email: &str, now: i64) -> Result<LoginStarted, AccessError> {
        let email = Email::parse(email)?;
        let started = login::start(&self.config.keys, &email, now, secs(self.config.login_ttl))?;
        self.config
            .sender
            .send(LoginCode {
                email: &email,
                code: &started.code,
                expires_at: started.expires_at,
            })
            .await
            .map_err(AccessError::CodeNotSent)?;
        Ok(LoginStarted {
            challenge: started.challenge,
            expires_at: started.expires_at,
        })
    }

    /// The session a login challenge and its code make.
    ///
    /// # Errors
    /// A challenge that does not open (forged, foreign, expired); a wrong code; too many.
    pub fn finish_login(
        &self,
        challenge: &str,
        code: &str,
        now: i64,
    ) -> Result<Session, AccessError> {
        let email = login::finish(&self.config.keys, &self.wrong_codes, challenge, code, now)?;
        Ok(self.session_for(&email, now))
    }

    /// A session for `email` from `now`, with no code asked: for whoever holds the keys (the
    /// API once a login is confirmed; tests).
    pub fn session_for(&self, email: &Email, now: i64) -> Session {
        let buyer = BuyerId::of(email);
        let expires_at = now.saturating_add(secs(self.config.session_ttl));
        // Without randomness the id is the time: still a valid session, only not unique.
        let sid = keys::random_bytes::<8>().map_or_else(|| now.to_string(), |b| keys::hex(&b));
        let token = self.config.keys.seal(
            Purpose::Session,
            &SessionClaims {
                sub: buyer.clone(),
                sid,
            },
            expires_at,
        );
        Session {
            token,
            buyer,
            expires_at,
        }
    }

    /// The buyer an `Authorization` header's session names.
    ///
    /// # Errors
    /// No header or not `Bearer`; a session that does not open.
    pub fn buyer(&self, authorization: Option<&str>, now: i64) -> Result<BuyerId, AccessError> {
        let token = bearer(authorization).ok_or(AccessError::Unauthenticated {
            needs: "a buyer session (POST /login, then POST /sessions)",
        })?;
        let (claims, _): (SessionClaims, i64) = self
            .config
            .keys
            .open(Purpose::Session, token, now)
            .map_err(AccessError::BadSession)?;
        Ok(claims.sub)
    }

    /// Whether an `Authorization` header holds an organizer token.
    ///
    /// # Errors
    /// Organizer routes off; no header; a token that is not an organizer's.
    pub fn organizer(&self, authorization: Option<&str>) -> Result<(), AccessError> {
        if !self.config.organizers.any() {
            return Err(AccessError::OrganizerDisabled);
        }
        let token = bearer(authorization).ok_or(AccessError::Unauthenticated {
            needs: "an organizer token",
        })?;
        if self.config.organizers.accepts(token) {
            Ok(())
        } else {
            Err(AccessError::NotOrganizer)
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case, RFC 9110).
fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, secs)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const KEY: &str = "k:0123456789abcdef0123456789abcdef";
    const ORGANIZER: &str = "organizer-token-0123456789";

    /// Keeps what it is asked to send.
    #[derive(Default, Clone)]
    struct Outbox(Arc<Mutex<Vec<(String, String)>>>);

    impl CodeSender for Outbox {
        fn send<'a>(&'a self, code: LoginCode<'a>) -> SendFuture<'a> {
            self.0
                .lock()
                .unwrap()
                .push((code.email.to_string(), code.code.to_owned()));
            Box::pin(std::future::ready(Ok(())))
        }

        fn name(&self) -> &'static str {
            "outbox"
        }
    }

    fn access(outbox: &Outbox) -> Access {
        let mut c = AccessConfig::new(
            KeyRing::parse(&[KEY]).unwrap(),
            OrganizerTokens::parse(&[ORGANIZER]).unwrap(),
        );
        c.sender = Box::new(outbox.clone());
        Access::new(c)
    }

    #[tokio::test]
    async fn a_login_confirmed_by_its_code_is_a_session_naming_the_buyer() {
        let outbox = Outbox::default();
        let a = access(&outbox);
        let started = a.start_login("Ann@Example.org", 1000).await.unwrap();
        let (to, code) = outbox.0.lock().unwrap().pop().unwrap();
        assert_eq!(to, "ann@example.org");
        let session = a.finish_login(&started.challenge, &code, 1010).unwrap();
        let header = format!("Bearer {}", session.token);
        assert_eq!(a.buyer(Some(&header), 1020).unwrap(), session.buyer);
        assert_eq!(
            session.buyer,
            BuyerId::of(&Email::parse("ann@example.org").unwrap())
        );
        // A session ends.
        assert!(matches!(
            a.buyer(Some(&header), session.expires_at),
            Err(AccessError::BadSession(TokenError::Expired))
        ));
    }

    #[test]
    fn a_login_challenge_is_not_a_session() {
        let a = access(&Outbox::default());
        let challenge = a.config.keys.seal(
            Purpose::Login,
            &SessionClaims {
                sub: BuyerId::of(&Email::parse("x@y.org").unwrap()),
                sid: "s".into(),
            },
            i64::MAX,
        );
        assert!(matches!(
            a.buyer(Some(&format!("Bearer {challenge}")), 0),
            Err(AccessError::BadSession(TokenError::BadSignature))
        ));
    }

    #[test]
    fn credentials_are_told_apart() {
        let a = access(&Outbox::default());
        assert!(a.organizer(Some(&format!("Bearer {ORGANIZER}"))).is_ok());
        assert!(a.organizer(Some(&format!("bearer  {ORGANIZER} "))).is_ok());
        let session = a.session_for(&Email::parse("ann@example.org").unwrap(), 0);
        assert!(matches!(
            a.organizer(Some(&format!("Bearer {}", session.token))),
            Err(AccessError::NotOrganizer)
        ));
        assert!(matches!(
            a.organizer(None),
            Err(AccessError::Unauthenticated { .. })
        ));
        assert!(matches!(
            a.organizer(Some(&format!("Basic {ORGANIZER}"))),
            Err(AccessError::Unauthenticated { .. })
        ));
        // An organizer token is not a buyer.
        assert!(matches!(
            a.buyer(Some(&format!("Bearer {ORGANIZER}")), 0),
            Err(AccessError::BadSession(TokenError::Malformed))
        ));
        let off = Access::new(AccessConfig::new(
            KeyRing::parse(&[KEY]).unwrap(),
            OrganizerTokens::parse::<&str>(&[]).unwrap(),
        ));
        assert!(matches!(
            off.organizer(Some(&format!("Bearer {ORGANIZER}"))),
            Err(AccessError::OrganizerDisabled)
        ));
    }
}
