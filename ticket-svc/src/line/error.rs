//! [`LineError`]: why a line request was refused (the API answers each with its own code).

use crate::access::TokenError;

/// Why a join, a place, a permit or a purchase under a waiting room was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The event has no waiting room.
    #[error("this event has no waiting room")]
    NoWaitingRoom,
    /// A queue token that does not open.
    #[error("the queue token is not valid: {0}")]
    BadQueueToken(TokenError),
    /// A permit that does not open (other than expired).
    #[error("the permit is not valid: {0}")]
    BadPermit(TokenError),
    /// A permit past its time.
    #[error("the permit expired: ask for a new one with the queue token")]
    PermitExpired,
    /// A token or permit of another event.
    #[error("the token is for another event")]
    OtherEvent,
    /// A permit (or queue token) of another visitor.
    #[error("the permit is another buyer's")]
    NotYours,
    /// A purchase without a permit for an event with a waiting room.
    #[error(
        "this event has a waiting room: join the line (POST /events/{{id}}/line), and buy with the permit you get when admitted"
    )]
    PermitRequired,
    /// A permit asked for before the visitor's place was admitted.
    #[error("not admitted yet: {ahead} ahead of place {place}")]
    NotAdmitted {
        /// The visitor's place.
        place: u64,
        /// Visitors still to be admitted before it.
        ahead: u64,
    },
    /// A permit asked for before the line opened.
    #[error("the line has not opened yet: places are drawn when the sale opens")]
    NotOpenYet,
    /// A join without the proof of work the room asks.
    #[error(
        "this line asks a proof of work of {bits} bits: GET /events/{{id}}/line/challenge, then join with the challenge and a solution"
    )]
    ProofRequired {
        /// The bits asked.
        bits: u8,
    },
    /// A proof of work that does not hold.
    #[error("the proof of work does not hold: {0}")]
    BadProof(String),
    /// The pre-queue is larger than one line can order.
    #[error("the pre-queue is too large to order")]
    TooLarge,
}

impl LineError {
    /// A short machine-readable name, for metrics labels and error codes.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoWaitingRoom => "no_waiting_room",
            Self::BadQueueToken(_) => "bad_queue_token",
            Self::BadPermit(_) => "bad_permit",
            Self::PermitExpired => "permit_expired",
            Self::OtherEvent => "other_event",
            Self::NotYours => "not_yours",
            Self::PermitRequired => "permit_required",
            Self::NotAdmitted { .. } => "not_admitted",
            Self::NotOpenYet => "not_open_yet",
            Self::ProofRequired { .. } => "proof_required",
            Self::BadProof(_) => "bad_proof",
            Self::TooLarge => "too_large",
        }
    }
}
