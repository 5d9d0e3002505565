//! Converting between stored columns and domain values (shared by both stores).

use super::error::StoreError;
use crate::domain::{
    EventId, LineSeed, Position, Purchase, PurchaseStatus, SaleWindow, UnixMillis, WaitingRoom,
};

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

/// A stored waiting room: `events.line_admit_per_s`, `line_seed` and `line_sealed_size` (all
/// NULL: no room, as every event from before rooms reads). Anything else that breaks the rules
/// reads as corrupt; the error names the seed's length, never its bytes.
pub fn waiting_room_of(
    admit_per_s: Option<i64>,
    seed: Option<Vec<u8>>,
    sealed_size: Option<i64>,
    pow_bits: i64,
) -> Result<Option<WaitingRoom>, StoreError> {
    let corrupt = |why: &str, seed_len: Option<usize>| StoreError::Corrupt {
        what: format!(
            "events.line_admit_per_s = {admit_per_s:?}, events.line_seed = {}, \
             events.line_sealed_size = {sealed_size:?} ({why})",
            seed_len.map_or_else(|| "NULL".to_owned(), |n| format!("{n} bytes"))
        ),
    };
    match (admit_per_s, seed) {
        (None, None) if sealed_size.is_none() && pow_bits == 0 => Ok(None),
        (Some(admit_per_s), Some(seed)) => {
            let seed_len = Some(seed.len());
            let seed = <[u8; LineSeed::LEN]>::try_from(seed.as_slice())
                .map_err(|_| corrupt("a seed is 32 bytes", seed_len))?;
            let room = WaitingRoom::with_seed(admit_per_s, LineSeed(seed))
                .and_then(|r| r.with_proof_of_work(pow_bits))
                .map_err(|e| corrupt(&e.to_string(), seed_len))?;
            Ok(Some(WaitingRoom {
                sealed_size: sealed_size.map(sealed_size_of).transpose()?,
                ..room
            }))
        }
        (_, seed) => Err(corrupt(
            "a room has a rate and a seed, and only a room a sealed size",
            seed.as_ref().map(Vec::len),
        )),
    }
}

/// A waiting room's columns: `line_admit_per_s`, `line_seed`, `line_sealed_size` and
/// `line_pow_bits`.
pub struct RoomColumns<'a> {
    /// `line_admit_per_s`.
    pub admit_per_s: Option<u32>,
    /// `line_seed`.
    pub seed: Option<&'a [u8]>,
    /// `line_sealed_size`.
    pub sealed_size: Option<i64>,
    /// `line_pow_bits` (0 without a room).
    pub pow_bits: i32,
}

/// A waiting room as its columns.
pub fn waiting_room_columns(room: Option<&WaitingRoom>) -> RoomColumns<'_> {
    match room {
        Some(r) => RoomColumns {
            admit_per_s: Some(r.admit_per_s),
            seed: Some(r.seed.0.as_slice()),
            sealed_size: r.sealed_size.map(i64_of),
            pow_bits: i32::from(r.proof_of_work_bits),
        },
        None => RoomColumns {
            admit_per_s: None,
            seed: None,
            sealed_size: None,
            pow_bits: 0,
        },
    }
}

/// A stored `events.line_sealed_size` as a size.
pub fn sealed_size_of(v: i64) -> Result<u64, StoreError> {
    u64_of(v, "events.line_sealed_size")
}

/// What [`super::Store::seal_line`] reads back after its `UPDATE`: the event's row, if any, as
/// (whether it has a waiting room, `line_sealed_size`).
pub fn sealed_on_record(
    event: EventId,
    row: Option<(bool, Option<i64>)>,
) -> Result<u64, StoreError> {
    match row {
        None => Err(StoreError::NoSuchEvent { event }),
        Some((false, _)) => Err(StoreError::NoWaitingRoom { event }),
        Some((true, Some(size))) => sealed_size_of(size),
        Some((true, None)) => Err(StoreError::Corrupt {
            what: format!("event {event}: events.line_sealed_size is NULL after sealing its line"),
        }),
    }
}

/// Parses a stored status pair (shared with the PostgreSQL store).
pub fn parse_status(status: &str, reason: Option<&str>) -> Result<PurchaseStatus, StoreError> {
    PurchaseStatus::parse(status, reason).ok_or_else(|| StoreError::Corrupt {
        what: format!("purchase status {status:?} reason {reason:?}"),
    })
}
