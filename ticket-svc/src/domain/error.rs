//! [`DomainError`]: a request that breaks a sale rule (the API answers it 400, in `http::error`).

/// A request that breaks a sale rule, named precisely enough to show to the buyer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The event name is empty or too long.
    #[error("name must be 1 to {max} characters")]
    BadName {
        /// The longest accepted name, in characters.
        max: usize,
    },
    /// The ticket count is outside the accepted range.
    #[error("tickets must be between 0 and {max}")]
    BadTickets {
        /// The largest accepted ticket count.
        max: u32,
    },
    /// `max_per_buyer` is outside the accepted range.
    #[error("max_per_buyer must be between 1 and {max}")]
    BadMaxPerBuyer {
        /// The largest accepted per-buyer limit.
        max: u32,
    },
    /// The buyer name is empty, too long or has control characters.
    #[error("buyer must be 1 to {max} printable characters")]
    BadBuyer {
        /// The longest accepted buyer name, in characters.
        max: usize,
    },
    /// The quantity is below 1 or above the event's `max_per_buyer`.
    #[error("quantity must be between 1 and {max_per_buyer} (got {got})")]
    BadQuantity {
        /// What the request asked for.
        got: i64,
        /// The event's per-buyer limit.
        max_per_buyer: u32,
    },
    /// The idempotency key is empty, too long or not visible ASCII.
    #[error("Idempotency-Key must be 1 to {max} visible ASCII characters")]
    BadIdempotencyKey {
        /// The longest accepted key, in bytes.
        max: usize,
    },
    /// A time that is not an RFC 3339 timestamp with an offset (or is outside the years 0000
    /// to 9999 in UTC).
    #[error("times must be RFC 3339 with an offset, e.g. 2026-12-24T18:00:00Z")]
    BadTimestamp,
    /// An on-sale time (`opens_at` or `closes_at`) outside the years 2000 to 9999.
    #[error("{field} must be between 2000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z")]
    BadSaleTime {
        /// The field: `opens_at` or `closes_at`.
        field: &'static str,
    },
    /// An on-sale window whose `closes_at` is not after its `opens_at`.
    #[error("closes_at must be after opens_at")]
    BadSaleWindow,
    /// A waiting room's admission rate outside the accepted range.
    #[error("waiting_room.admit_per_s must be between {min} and {max}")]
    BadAdmitRate {
        /// The slowest accepted rate, visitors per second.
        min: u32,
        /// The fastest accepted rate, visitors per second.
        max: u32,
    },
    /// A waiting room for an event whose window has no `opens_at`.
    #[error("a waiting room needs opens_at: the line forms before the sale opens")]
    WaitingRoomNeedsOpensAt,
    /// A waiting room's proof-of-work difficulty out of range.
    #[error("waiting_room.proof_of_work_bits must be between 0 and {max}")]
    BadProofOfWorkBits {
        /// The hardest accepted.
        max: u8,
    },
    /// A waiting room's pacing that is neither `fixed` nor `auto`.
    #[error("waiting_room.pace must be \"fixed\" or \"auto\"")]
    BadPacing,
    /// A point of a line's admission curve out of range (a store's row, never a request).
    #[error(
        "a line pace must admit 0 or more places at 1 to 1000000 a second (0 to 1000000 before its time)"
    )]
    BadLinePace,
}
