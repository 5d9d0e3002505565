//! Organizer credentials: bearer tokens the operator gives the API (`--organizer-token`, several
//! for rotation), compared in constant time.

use ring::hmac;

use super::error::AccessConfigError;
use super::keys::random_bytes;

/// The shortest organizer token accepted.
pub const MIN_ORGANIZER_TOKEN_CHARS: usize = 16;
/// The longest.
pub const MAX_ORGANIZER_TOKEN_CHARS: usize = 256;

/// The organizer tokens an API accepts (none: organizer routes are off).
pub struct OrganizerTokens {
    /// Each token's MAC under a key made at start: a presented token is checked by MAC, so the
    /// comparison's time says nothing about how much of it matched.
    tags: Vec<hmac::Tag>,
    key: hmac::Key,
}

impl std::fmt::Debug for OrganizerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrganizerTokens")
            .field("count", &self.tags.len())
            .finish()
    }
}

impl OrganizerTokens {
    /// Tokens from their values (each may hold several, comma-separated, as
    /// `TICKET_ORGANIZER_TOKENS` does). No token at all is allowed: organizer routes then
    /// answer 403.
    ///
    /// # Errors
    /// A token that is not 16 to 256 visible ASCII characters (commas excepted); no randomness.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, AccessConfigError> {
        let key = hmac::Key::new(
            hmac::HMAC_SHA256,
            &random_bytes::<32>().ok_or(AccessConfigError::NoRandomness)?,
        );
        let mut tags = Vec::new();
        for token in values
            .iter()
            .flat_map(|v| v.as_ref().split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if !(MIN_ORGANIZER_TOKEN_CHARS..=MAX_ORGANIZER_TOKEN_CHARS).contains(&token.len())
                || !token.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(AccessConfigError::BadOrganizerToken);
            }
            tags.push(hmac::sign(&key, token.as_bytes()));
        }
        Ok(Self { tags, key })
    }

    /// Whether any token is configured.
    pub fn any(&self) -> bool {
        !self.tags.is_empty()
    }

    /// Whether `presented` is one of the tokens.
    pub fn accepts(&self, presented: &str) -> bool {
        let mut found = false;
        for tag in &self.tags {
            found |= hmac::verify(&self.key, presented.as_bytes(), tag.as_ref()).is_ok();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_token_is_accepted_and_nothing_else() {
        let t =
            OrganizerTokens::parse(&["first-token-0123456789,second-token-0123456789"]).unwrap();
        assert!(t.any());
        assert!(t.accepts("first-token-0123456789"));
        assert!(t.accepts("second-token-0123456789"));
        assert!(!t.accepts("first-token-012345678"));
        assert!(!t.accepts(""));
    }

    #[test]
    fn short_or_spaced_tokens_are_refused_and_none_is_allowed() {
        assert!(OrganizerTokens::parse(&["short"]).is_err());
        assert!(OrganizerTokens::parse(&["has a space in it 0123456789"]).is_err());
        let none = OrganizerTokens::parse::<&str>(&[]).unwrap();
        assert!(!none.any());
        assert!(!none.accepts("anything-at-all-0123456789"));
    }
}
