//! Converting between stored columns and domain values (shared by both stores).

use super::error::StoreError;
use crate::domain::{EventId, Position, Purchase, PurchaseStatus, SaleWindow, UnixMillis};

/// A purchase's columns: id, event_id, buyer, quantity, position, status, reason.
pub type PurchaseRow = (String, i64, String, i64, i64, String, Option<String>);

/// A stored count (tickets, quantity, a total) as a `u32`; `what` names the column if it is not.
pub fn u32_of(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt {
        what: format!("{what} = {v}"),
    })
}

/// A position or offset to store: offsets in a log never reach 2^63.
pub fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        what: format!("{what} = {v}"),
    })
}

/// A stored `purchases.position` as a place in line.
pub fn position_of(v: i64) -> Result<Position, StoreError> {
    u64_of(v, "purchases.position").map(Position)
}

/// Turns stored columns into a purchase (shared with the PostgreSQL store).
pub fn to_purchase(
    (id, event_id, buyer, quantity, position, status, reason): PurchaseRow,
) -> Result<Purchase, StoreError> {
    Ok(Purchase {
        id: id.parse().map_err(|_| StoreError::Corrupt {
            what: format!("purchases.id = {id:?}"),
        })?,
        event_id: EventId(event_id),
        buyer,
        quantity: u32_of(quantity, "purchases.quantity")?,
        position: position_of(position)?,
        status: parse_status(&status, reason.as_deref())?,
    })
}

/// A stored window, `events.opens_at_ms` and `events.closes_at_ms` (both NULL: always on sale,
/// as every event from before windows reads).
pub fn window_of(
    opens_at_ms: Option<i64>,
    closes_at_ms: Option<i64>,
) -> Result<SaleWindow, StoreError> {
    SaleWindow::new(opens_at_ms.map(UnixMillis), closes_at_ms.map(UnixMillis)).map_err(|e| {
        StoreError::Corrupt {
            what: format!(
                "events.opens_at_ms = {opens_at_ms:?}, events.closes_at_ms = {closes_at_ms:?} ({e})"
            ),
        }
    })
}

/// A window as its columns, `(opens_at_ms, closes_at_ms)`.
pub fn window_columns(window: &SaleWindow) -> (Option<i64>, Option<i64>) {
    (
        window.opens_at().map(|t| t.0),
        window.closes_at().map(|t| t.0),
    )
}

/// Parses a stored status pair (shared with the PostgreSQL store).
pub fn parse_status(status: &str, reason: Option<&str>) -> Result<PurchaseStatus, StoreError> {
    PurchaseStatus::parse(status, reason).ok_or_else(|| StoreError::Corrupt {
        what: format!("purchase status {status:?} reason {reason:?}"),
    })
}
