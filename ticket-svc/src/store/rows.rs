//! Converting between stored columns and domain values (shared by both stores).

use super::error::StoreError;
use crate::domain::{
    EventId, LinePace, LineSeed, Pacing, Position, Purchase, PurchaseStatus, SaleWindow,
    UnixMillis, WaitingRoom,
};

/// A purchase's columns: id, event_id, buyer, quantity, position, status, reason.
pub type PurchaseRow = (String, i64, String, i64, i64, String, Option<String>);

/// A stored count (tickets, quantity, a total) as a `u32`; `what` names the column if it is not.
pub fn u32_of(v: impl Into<i64>, what: &str) -> Result<u32, StoreError> {
    let v = v.into();
    u32::try_from(v).map_err(|_| StoreError::Corrupt {
        what: format!("{what} = {v}"),
    })
}

/// A count to store as PostgreSQL's `INTEGER`: quantities and ticket counts are validated far
/// below 2^31.
pub fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
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

/// A stored waiting room: `events.line_admit_per_s`, `line_seed`, `line_sealed_size`,
/// `line_pow_bits` and `line_pacing` (NULL, NULL, NULL, 0 and `fixed`: no room, as every event
/// from before rooms reads). Anything else that breaks the rules reads as corrupt; the error
/// names the seed's length, never its bytes.
pub fn waiting_room_of(
    admit_per_s: Option<i64>,
    seed: Option<Vec<u8>>,
    sealed_size: Option<i64>,
    pow_bits: i64,
    pacing: &str,
) -> Result<Option<WaitingRoom>, StoreError> {
    let pacing = Pacing::parse(pacing).map_err(|e| StoreError::Corrupt {
        what: format!("events.line_pacing = {pacing:?} ({e})"),
    })?;
    let corrupt = |why: &str, seed_len: Option<usize>| StoreError::Corrupt {
        what: format!(
            "events.line_admit_per_s = {admit_per_s:?}, events.line_seed = {}, \
             events.line_sealed_size = {sealed_size:?} ({why})",
            seed_len.map_or_else(|| "NULL".to_owned(), |n| format!("{n} bytes"))
        ),
    };
    match (admit_per_s, seed) {
        (None, None) if sealed_size.is_none() && pow_bits == 0 && pacing == Pacing::Fixed => {
            Ok(None)
        }
        (Some(admit_per_s), Some(seed)) => {
            let seed_len = Some(seed.len());
            let seed = <[u8; LineSeed::LEN]>::try_from(seed.as_slice())
                .map_err(|_| corrupt("a seed is 32 bytes", seed_len))?;
            let room = WaitingRoom::with_seed(admit_per_s, LineSeed(seed))
                .and_then(|r| r.with_proof_of_work(pow_bits))
                .map_err(|e| corrupt(&e.to_string(), seed_len))?;
            Ok(Some(WaitingRoom {
                sealed_size: sealed_size.map(sealed_size_of).transpose()?,
                ..room.with_pacing(pacing)
            }))
        }
        (_, seed) => Err(corrupt(
            "a room has a rate and a seed, and only a room a sealed size, a proof of work or \
             automatic pacing",
            seed.as_ref().map(Vec::len),
        )),
    }
}

/// A waiting room's columns: `line_admit_per_s`, `line_seed`, `line_sealed_size`,
/// `line_pow_bits` and `line_pacing`.
pub struct RoomColumns<'a> {
    /// `line_admit_per_s`.
    pub admit_per_s: Option<u32>,
    /// `line_seed`.
    pub seed: Option<&'a [u8]>,
    /// `line_sealed_size`.
    pub sealed_size: Option<i64>,
    /// `line_pow_bits` (0 without a room).
    pub pow_bits: i32,
    /// `line_pacing` (`fixed` without a room).
    pub pacing: &'static str,
}

/// A waiting room as its columns.
pub fn waiting_room_columns(room: Option<&WaitingRoom>) -> RoomColumns<'_> {
    match room {
        Some(r) => RoomColumns {
            admit_per_s: Some(r.admit_per_s),
            seed: Some(r.seed.0.as_slice()),
            sealed_size: r.sealed_size.map(i64_of),
            pow_bits: i32::from(r.proof_of_work_bits),
            pacing: r.pacing.as_str(),
        },
        None => RoomColumns {
            admit_per_s: None,
            seed: None,
            sealed_size: None,
            pow_bits: 0,
            pacing: Pacing::Fixed.as_str(),
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

/// A line pace as its columns in `line_paces`: `(at_ms, admitted_milli, per_s, per_s_before)`.
/// An `admitted_milli` past `i64::MAX` is stored as `i64::MAX` (no line is that long), a rate past
/// `i32::MAX` as `i32::MAX` (which the table's CHECK refuses).
pub fn line_pace_columns(pace: &LinePace) -> (i64, i64, i32, i32) {
    let rate = |r: u32| i32::try_from(r).unwrap_or(i32::MAX);
    (
        pace.at.0,
        i64_of(pace.admitted_milli),
        rate(pace.per_s),
        rate(pace.per_s_before),
    )
}

/// What a store reads of an event's line pace: whether the event has a waiting room, and its
/// `line_paces` row's `at_ms`, `admitted_milli`, `per_s` and `per_s_before` (all NULL: none
/// recorded).
pub type PaceRow = (bool, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// The line pace on record from what [`super::Store::line_pace`] reads (`row`: `None` without
/// such an event): [`StoreError::NoSuchEvent`], [`StoreError::NoWaitingRoom`], or the pace, if
/// one is recorded; a row out of range is corrupt.
pub fn pace_on_record(
    event: EventId,
    row: Option<PaceRow>,
) -> Result<Option<LinePace>, StoreError> {
    match row {
        None => Err(StoreError::NoSuchEvent { event }),
        Some((false, ..)) => Err(StoreError::NoWaitingRoom { event }),
        Some((true, None, None, None, None)) => Ok(None),
        Some((true, Some(at_ms), Some(admitted), Some(per_s), Some(before))) => {
            LinePace::new(UnixMillis(at_ms), admitted, per_s, before)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: format!(
                        "event {event}: line_paces.at_ms = {at_ms}, admitted_milli = {admitted}, \
                         per_s = {per_s}, per_s_before = {before} ({e})"
                    ),
                })
        }
        Some((true, at_ms, admitted, per_s, before)) => Err(StoreError::Corrupt {
            what: format!(
                "event {event}: line_paces.at_ms = {at_ms:?}, admitted_milli = {admitted:?}, \
                 per_s = {per_s:?}, per_s_before = {before:?} (all set or none)"
            ),
        }),
    }
}

/// What [`super::Store::record_line_pace`] reads back after its compare-and-set (`row`, as for
/// [`pace_on_record`]): the pace on record, which there must be, since this call or another
/// recorded one; none is corrupt (or a `current` that was never recorded).
pub fn recorded_pace(
    event: EventId,
    current: Option<LinePace>,
    row: Option<PaceRow>,
) -> Result<LinePace, StoreError> {
    pace_on_record(event, row)?.ok_or_else(|| StoreError::Corrupt {
        what: format!(
            "event {event}: no line pace on record after recording one over {current:?} \
             (a current pace that was never recorded?)"
        ),
    })
}

/// Parses a stored status pair (shared with the PostgreSQL store).
pub fn parse_status(status: &str, reason: Option<&str>) -> Result<PurchaseStatus, StoreError> {
    PurchaseStatus::parse(status, reason).ok_or_else(|| StoreError::Corrupt {
        what: format!("purchase status {status:?} reason {reason:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
        match r {
            Err(e @ StoreError::Corrupt { .. }) => e.to_string(),
            other => panic!("not corrupt: {other:?}"),
        }
    }

    #[test]
    fn a_stored_pacing_is_fixed_or_auto_and_auto_only_with_a_room() {
        let room = |pacing| waiting_room_of(Some(5), Some(vec![1; 32]), None, 0, pacing);
        assert_eq!(room("fixed").unwrap().unwrap().pacing, Pacing::Fixed);
        assert_eq!(room("auto").unwrap().unwrap().pacing, Pacing::Auto);
        for bad in ["fast", "AUTO", ""] {
            let err = corrupt(room(bad));
            assert!(err.contains(&format!("line_pacing = {bad:?}")), "{err}");
        }
        assert_eq!(waiting_room_of(None, None, None, 0, "fixed").unwrap(), None);
        corrupt(waiting_room_of(None, None, None, 0, "auto"));
        corrupt(waiting_room_of(None, None, None, 0, "fast"));
    }

    #[test]
    fn a_room_writes_its_pacing() {
        let auto = WaitingRoom::new(5).unwrap().with_pacing(Pacing::Auto);
        assert_eq!(waiting_room_columns(Some(&auto)).pacing, "auto");
        let fixed = WaitingRoom::new(5).unwrap();
        assert_eq!(waiting_room_columns(Some(&fixed)).pacing, "fixed");
        assert_eq!(waiting_room_columns(None).pacing, "fixed");
    }

    #[test]
    fn a_stored_line_pace_is_a_point_or_an_answer_about_the_event() {
        let e = EventId(3);
        assert!(matches!(
            pace_on_record(e, None),
            Err(StoreError::NoSuchEvent { event }) if event == e
        ));
        assert!(matches!(
            pace_on_record(e, Some((false, None, None, None, None))),
            Err(StoreError::NoWaitingRoom { event }) if event == e
        ));
        assert_eq!(
            pace_on_record(e, Some((true, None, None, None, None))).unwrap(),
            None
        );
        assert_eq!(
            pace_on_record(e, Some((true, Some(-5), Some(7), Some(100), Some(0)))).unwrap(),
            Some(LinePace {
                at: UnixMillis(-5),
                admitted_milli: 7,
                per_s: 100,
                per_s_before: 0
            })
        );
        for bad in [
            (true, Some(1), Some(-1), Some(100), Some(1)),
            (true, Some(1), Some(0), Some(0), Some(1)),
            (true, Some(1), Some(0), Some(1_000_001), Some(1)),
            (true, Some(1), Some(0), Some(100), Some(-1)),
            (true, Some(1), None, Some(100), Some(1)),
            (true, Some(1), Some(0), Some(100), None),
            (true, None, Some(0), None, None),
        ] {
            corrupt(pace_on_record(e, Some(bad)));
        }
        // Nothing on record after recording is corrupt; the answers about the event stand.
        corrupt(recorded_pace(e, None, Some((true, None, None, None, None))));
        assert!(matches!(
            recorded_pace(e, None, None),
            Err(StoreError::NoSuchEvent { .. })
        ));
    }

    #[test]
    fn a_line_pace_past_the_columns_is_stored_at_their_top() {
        let pace = LinePace {
            at: UnixMillis(9),
            admitted_milli: u64::MAX,
            per_s: u32::MAX,
            per_s_before: u32::MAX,
        };
        assert_eq!(line_pace_columns(&pace), (9, i64::MAX, i32::MAX, i32::MAX));
        let pace = LinePace::new(UnixMillis(-1), 12, 1_000_000, 7).unwrap();
        assert_eq!(line_pace_columns(&pace), (-1, 12, 1_000_000, 7));
    }
}
