//! Who a buyer is: an e-mail address, confirmed by a one-time code, and the [`BuyerId`] the sale
//! knows them by.

use std::fmt;

use ring::digest;

use super::error::AccessError;

/// The longest e-mail address accepted, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// An e-mail address, trimmed and lowercased: `Ann@Example.org` and `ann@example.org` are one
/// buyer. (RFC 5321 lets a mail server tell local parts apart by case; no mail provider a buyer
/// uses does, and treating them as two would let one person hold two identities.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Checks the address's form: one `@`, a non-empty local part, a domain with a dot and no
    /// empty label, no whitespace or control characters, at most 254 bytes.
    ///
    /// # Errors
    /// [`AccessError::BadEmail`] naming the rule.
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        let text = text.trim().to_lowercase();
        let bad = |why: &'static str| Err(AccessError::BadEmail { why });
        if text.is_empty() || text.len() > MAX_EMAIL_BYTES {
            return bad("must be 1 to 254 bytes");
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("must have no spaces or control characters");
        }
        let Some((local, domain)) = text.split_once('@') else {
            return bad("must have an @");
        };
        if local.is_empty() || domain.contains('@') {
            return bad("must be local@domain with one @");
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return bad("must have a domain like example.org");
        }
        Ok(Self(text))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id the sale knows a buyer by: `b-` and the first 16 bytes of SHA-256 of the normalized
/// e-mail address, as hex (34 characters). It is what purchases, per-buyer limits, the queue and
/// the store carry, so no address sits in the broker's log or in `GET /purchases/{id}`; support
/// finds a buyer's purchases from the address with the same function. It does not depend on the
/// signing keys, so rotating them keeps every buyer's purchases theirs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BuyerId(String);

impl BuyerId {
    /// The id of the buyer with this address.
    pub fn of(email: &Email) -> Self {
        let d = digest::digest(
            &digest::SHA256,
            format!("ticketrush buyer\n{}", email.as_str()).as_bytes(),
        );
        Self(format!("b-{}", super::keys::hex(&d.as_ref()[..16])))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BuyerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_and_checked() {
        assert_eq!(
            Email::parse("  Ann@Example.ORG ").unwrap().as_str(),
            "ann@example.org"
        );
        for bad in [
            "",
            "ann",
            "@example.org",
            "ann@",
            "ann@example",
            "ann@@example.org",
            "a@b@example.org",
            "ann@example..org",
            "an n@example.org",
            "ann@example.org\n",
        ] {
            let trimmed_ok = bad == "ann@example.org\n";
            assert_eq!(Email::parse(bad).is_ok(), trimmed_ok, "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn one_address_is_one_buyer_and_two_are_two() {
        let a = BuyerId::of(&Email::parse("ann@example.org").unwrap());
        let a2 = BuyerId::of(&Email::parse("ANN@example.org").unwrap());
        let b = BuyerId::of(&Email::parse("bob@example.org").unwrap());
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 34);
        assert!(a.as_str().starts_with("b-"));
        // Fixed forever: a buyer's purchases are found by it (SHA-256 of
        // "ticketrush buyer\nann@example.org", first 16 bytes).
        assert_eq!(a.as_str(), "b-98b8742a9a0356302abb31f684855a93");
    }
}
