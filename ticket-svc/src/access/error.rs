//! What can go wrong: [`AccessConfigError`] when the API starts, [`AccessError`] per request,
//! [`TokenError`] when a signed token does not open.

/// A bad access setting, found before anything is served.
#[derive(Debug, thiserror::Error)]
pub enum AccessConfigError {
    /// No signing key given.
    #[error(
        "no signing key: give --signing-key ID:SECRET (or TICKET_SIGNING_KEYS); every API instance needs the same keys"
    )]
    NoSigningKey,
    /// A key spec without its id.
    #[error("a signing key must be given as ID:SECRET")]
    KeyWithoutId,
    /// A key id of the wrong form.
    #[error("signing key id {id:?}: must be 1 to 16 of A-Z, a-z, 0-9, _ and -")]
    BadKeyId {
        /// The id given.
        id: String,
    },
    /// A secret too short to be safe.
    #[error("signing key {id}: the secret has {bytes} bytes, it needs at least 32")]
    ShortSecret {
        /// The key's id.
        id: String,
        /// The secret's length.
        bytes: usize,
    },
    /// The same key id twice.
    #[error("signing key id {id} is given twice")]
    DuplicateKeyId {
        /// The id.
        id: String,
    },
    /// An organizer token too short or with spaces.
    #[error("an organizer token must be 16 to 256 visible ASCII characters")]
    BadOrganizerToken,
    /// A login sender spec that is neither `log` nor an http:// URL.
    #[error("--login-sender {spec:?}: expected `log` or an http://host:port/path URL")]
    BadSender {
        /// The spec given.
        spec: String,
    },
    /// The OS's random source failed.
    #[error("the operating system's random source failed")]
    NoRandomness,
}

/// Why a request's identity or credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// An e-mail address of the wrong form.
    #[error("email {why}")]
    BadEmail {
        /// The rule it broke.
        why: &'static str,
    },
    /// No credential where one is needed.
    #[error("this route needs {needs}: send Authorization: Bearer TOKEN")]
    Unauthenticated {
        /// What kind of credential.
        needs: &'static str,
    },
    /// A buyer session that does not open.
    #[error("the buyer session is not valid: {0}")]
    BadSession(TokenError),
    /// A login challenge that does not open.
    #[error("the login is not valid: {0}; ask for a new code")]
    BadLogin(TokenError),
    /// The code does not match the login's.
    #[error("the code is not the one sent for this login")]
    WrongCode,
    /// Too many wrong codes for one login.
    #[error("too many wrong codes for this login; ask for a new code")]
    TooManyAttempts,
    /// A credential that is not an organizer's on an organizer route.
    #[error("this route is for organizers; the credential is not an organizer token")]
    NotOrganizer,
    /// The API has no organizer tokens.
    #[error("organizer routes are off on this API: it was started without --organizer-token")]
    OrganizerDisabled,
    /// The code could not be sent.
    #[error("the login code could not be sent: {0}")]
    CodeNotSent(String),
    /// The OS's random source failed.
    #[error("the operating system's random source failed")]
    NoRandomness,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this form (or over [`MAX_TOKEN_BYTES`]).
    #[error("not a ticketrush token")]
    Malformed,
    /// Signed with a key this API does not have (a foreign token, or a key rotated out).
    #[error("signed with a key this server does not know")]
    UnknownKey,
    /// The MAC does not match: altered, forged, or made for another purpose.
    #[error("its signature does not match (altered, forged, or not this kind of token)")]
    BadSignature,
    /// Valid, but past its expiry.
    #[error("expired")]
    Expired,
}

impl TokenError {
    /// A short machine-readable name, for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
        }
    }
}
