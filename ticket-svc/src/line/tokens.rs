//! A visitor's two signed papers: the *queue token* (which event, which visitor, which join:
//! their place follows from it once the line opens) and the *permit* (leave to buy once, for a
//! few minutes, given to a visitor whose place was admitted). Both are tokens of the API's
//! [`KeyRing`] with a purpose of their own, so neither is accepted for the other or as a
//! session, and one signed for another event or visitor is refused by name.

use serde::{Deserialize, Serialize};

use super::error::LineError;
use crate::access::{BuyerId, KeyRing, Purpose};
use crate::domain::EventId;

/// What a queue token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTicket {
    /// The event whose line it is.
    #[serde(rename = "e")]
    pub event: EventId,
    /// Who stands in it.
    #[serde(rename = "v")]
    pub visitor: BuyerId,
    /// The join's offset in the event's line log.
    #[serde(rename = "s")]
    pub seq: u64,
    /// When the visitor joined (Unix milliseconds).
    #[serde(rename = "j")]
    pub joined_at_ms: i64,
}

/// What a permit says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permit {
    /// The event it lets the visitor buy.
    #[serde(rename = "e")]
    pub event: EventId,
    /// Who may use it.
    #[serde(rename = "v")]
    pub visitor: BuyerId,
    /// The join it was admitted for: one purchase per permit is one purchase per join.
    #[serde(rename = "s")]
    pub seq: u64,
}

impl QueueTicket {
    /// The token, valid until `expires_at` (Unix seconds).
    pub fn seal(&self, keys: &KeyRing, expires_at: i64) -> String {
        keys.seal(Purpose::Queue, self, expires_at)
    }

    /// The ticket a token holds, if it is this event's and opens (`now` in Unix seconds).
    ///
    /// # Errors
    /// [`LineError::BadQueueToken`] (forged, altered, foreign, expired: the reason says which),
    /// [`LineError::OtherEvent`].
    pub fn open(keys: &KeyRing, token: &str, event: EventId, now: i64) -> Result<Self, LineError> {
        let (ticket, _): (Self, i64) = keys
            .open(Purpose::Queue, token, now)
            .map_err(LineError::BadQueueToken)?;
        if ticket.event != event {
            return Err(LineError::OtherEvent);
        }
        Ok(ticket)
    }
}

impl Permit {
    /// The permit, valid until `expires_at` (Unix seconds).
    pub fn seal(&self, keys: &KeyRing, expires_at: i64) -> String {
        keys.seal(Purpose::Permit, self, expires_at)
    }

    /// The permit a token holds, if it is for this event and this buyer and still valid.
    ///
    /// # Errors
    /// [`LineError::BadPermit`] (an expired one: [`LineError::PermitExpired`]),
    /// [`LineError::OtherEvent`], [`LineError::NotYours`].
    pub fn open(
        keys: &KeyRing,
        token: &str,
        event: EventId,
        buyer: &BuyerId,
        now: i64,
    ) -> Result<Self, LineError> {
        let (permit, _): (Self, i64) = keys.open(Purpose::Permit, token, now).map_err(|e| {
            if e == crate::access::TokenError::Expired {
                LineError::PermitExpired
            } else {
                LineError::BadPermit(e)
            }
        })?;
        if permit.event != event {
            return Err(LineError::OtherEvent);
        }
        if permit.visitor != *buyer {
            return Err(LineError::NotYours);
        }
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Email, TokenError};

    fn keys() -> KeyRing {
        KeyRing::parse(&["k:0123456789abcdef0123456789abcdef"]).unwrap()
    }

    fn ann() -> BuyerId {
        BuyerId::of(&Email::parse("ann@example.org").unwrap())
    }

    fn ticket() -> QueueTicket {
        QueueTicket {
            event: EventId(7),
            visitor: ann(),
            seq: 41,
            joined_at_ms: 1_000,
        }
    }

    #[test]
    fn a_ticket_opens_for_its_event_only() {
        let t = ticket().seal(&keys(), 100);
        assert_eq!(QueueTicket::open(&keys(), &t, EventId(7), 50), Ok(ticket()));
        assert_eq!(
            QueueTicket::open(&keys(), &t, EventId(8), 50),
            Err(LineError::OtherEvent)
        );
        assert_eq!(
            QueueTicket::open(&keys(), &t, EventId(7), 100),
            Err(LineError::BadQueueToken(TokenError::Expired))
        );
        // A permit is not a ticket, nor the other way round.
        let p = Permit {
            event: EventId(7),
            visitor: ann(),
            seq: 41,
        }
        .seal(&keys(), 100);
        assert_eq!(
            QueueTicket::open(&keys(), &p, EventId(7), 50),
            Err(LineError::BadQueueToken(TokenError::BadSignature))
        );
        assert!(matches!(
            Permit::open(&keys(), &t, EventId(7), &ann(), 50),
            Err(LineError::BadPermit(TokenError::BadSignature))
        ));
    }

    #[test]
    fn a_permit_is_its_buyers_for_its_event_until_it_expires() {
        let permit = Permit {
            event: EventId(7),
            visitor: ann(),
            seq: 41,
        };
        let p = permit.seal(&keys(), 100);
        assert_eq!(
            Permit::open(&keys(), &p, EventId(7), &ann(), 99),
            Ok(permit)
        );
        let bob = BuyerId::of(&Email::parse("bob@example.org").unwrap());
        assert_eq!(
            Permit::open(&keys(), &p, EventId(7), &bob, 99),
            Err(LineError::NotYours)
        );
        assert_eq!(
            Permit::open(&keys(), &p, EventId(9), &ann(), 99),
            Err(LineError::OtherEvent)
        );
        assert_eq!(
            Permit::open(&keys(), &p, EventId(7), &ann(), 100),
            Err(LineError::PermitExpired)
        );
    }
}
