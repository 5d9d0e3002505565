//! An event's on-sale window: the instant buying opens and the instant it closes.
//!
//! [`UnixMillis`] is an instant: milliseconds since the Unix epoch, UTC. In JSON it is an
//! RFC 3339 string, written in UTC with exactly three fractional digits
//! (`2026-12-24T18:00:00.000Z`, the shape of JavaScript's `toISOString`: one width, so the texts
//! sort as the instants do) and read with any offset and any number of fractional digits
//! (digits past the millisecond are dropped, towards the past). Only years 0000 to 9999 (UTC)
//! have an RFC 3339 form: [`UnixMillis::MIN`] to [`UnixMillis::MAX`].
//!
//! Invariants of a [`SaleWindow`], checked by [`SaleWindow::new`] (the only way to make one
//! other than [`SaleWindow::ALWAYS`]):
//! - each time it has lies in the years 2000 to 9999, UTC ([`SaleWindow::EARLIEST`] to
//!   [`SaleWindow::LATEST`]);
//! - `closes_at` is after `opens_at` when it has both (the stores hold the same CHECK);
//! - it is half-open: on sale from `opens_at` (inclusive) until `closes_at` (exclusive); a
//!   missing end is no limit, so [`SaleWindow::ALWAYS`] is always on sale.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::DomainError;

const NANOS_PER_MILLI: i128 = 1_000_000;

/// An instant: milliseconds since the Unix epoch (1970-01-01T00:00:00Z). An RFC 3339 string in
/// JSON (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The earliest instant with an RFC 3339 form: 0000-01-01T00:00:00.000Z.
    pub const MIN: Self = Self(-62_167_219_200_000);
    /// The latest instant with an RFC 3339 form: 9999-12-31T23:59:59.999Z.
    pub const MAX: Self = Self(253_402_300_799_999);

    /// The system clock's time now.
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        // A clock past the year 292 million saturates rather than wraps.
        Self(i64::try_from(nanos.div_euclid(NANOS_PER_MILLI)).unwrap_or(i64::MAX))
    }

    /// Whether this instant has an RFC 3339 form ([`UnixMillis::MIN`] to [`UnixMillis::MAX`]).
    pub fn is_rfc3339(self) -> bool {
        (Self::MIN..=Self::MAX).contains(&self)
    }

    /// This instant in RFC 3339, UTC, with milliseconds (`2026-12-24T18:00:00.000Z`); `None`
    /// outside the years 0000 to 9999.
    pub fn to_rfc3339(self) -> Option<String> {
        if !self.is_rfc3339() {
            return None;
        }
        let t =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * NANOS_PER_MILLI).ok()?;
        Some(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ))
    }

    /// Reads an RFC 3339 timestamp with any offset (`2026-12-24T18:00:00Z`,
    /// `2026-12-24T19:00:00.5+01:00`); digits past the millisecond are dropped.
    ///
    /// # Errors
    /// [`DomainError::BadTimestamp`] for anything else, and for an instant outside the years
    /// 0000 to 9999 in UTC (which could not be written back).
    pub fn parse_rfc3339(text: &str) -> Result<Self, DomainError> {
        let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| DomainError::BadTimestamp)?;
        i64::try_from(t.unix_timestamp_nanos().div_euclid(NANOS_PER_MILLI))
            .ok()
            .map(Self)
            .filter(|m| m.is_rfc3339())
            .ok_or(DomainError::BadTimestamp)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_rfc3339() {
            Some(text) => f.write_str(&text),
            None => write!(f, "{} ms after the Unix epoch", self.0),
        }
    }
}

impl FromStr for UnixMillis {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(s)
    }
}

impl Serialize for UnixMillis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.to_rfc3339().ok_or_else(|| {
            serde::ser::Error::custom(format!(
                "{} ms after the Unix epoch is outside the years 0000 to 9999 of RFC 3339",
                self.0
            ))
        })?;
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for UnixMillis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Rfc3339Text;
        impl serde::de::Visitor<'_> for Rfc3339Text {
            type Value = UnixMillis;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string, e.g. \"2026-12-24T18:00:00Z\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UnixMillis, E> {
                UnixMillis::parse_rfc3339(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Rfc3339Text)
    }
}

/// When an event is on sale: from `opens_at` (inclusive) until `closes_at` (exclusive), either
/// end possibly open. Valid by construction (see the module docs); JSON
/// `{"opens_at": "...", "closes_at": null}`, checked again when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct SaleWindow {
    opens_at: Option<UnixMillis>,
    closes_at: Option<UnixMillis>,
}

impl SaleWindow {
    /// No limit either way: always on sale (every event before windows existed).
    pub const ALWAYS: Self = Self {
        opens_at: None,
        closes_at: None,
    };
    /// The earliest time a window may name: 2000-01-01T00:00:00.000Z.
    pub const EARLIEST: UnixMillis = UnixMillis(946_684_800_000);
    /// The latest time a window may name: 9999-12-31T23:59:59.999Z.
    pub const LATEST: UnixMillis = UnixMillis::MAX;

    /// A window opening at `opens_at` and closing at `closes_at` (`None`: no limit that way).
    ///
    /// # Errors
    /// [`DomainError::BadSaleTime`] for a time outside [`SaleWindow::EARLIEST`] to
    /// [`SaleWindow::LATEST`] (`opens_at` checked first); [`DomainError::BadSaleWindow`] when
    /// `closes_at` is not after `opens_at`.
    pub fn new(
        opens_at: Option<UnixMillis>,
        closes_at: Option<UnixMillis>,
    ) -> Result<Self, DomainError> {
        for (field, time) in [("opens_at", opens_at), ("closes_at", closes_at)] {
            if time.is_some_and(|t| !(Self::EARLIEST..=Self::LATEST).contains(&t)) {
                return Err(DomainError::BadSaleTime { field });
            }
        }
        if let (Some(opens), Some(closes)) = (opens_at, closes_at)
            && closes <= opens
        {
            return Err(DomainError::BadSaleWindow);
        }
        Ok(Self {
            opens_at,
            closes_at,
        })
    }

    /// When buying opens, if it waits for a time.
    pub fn opens_at(&self) -> Option<UnixMillis> {
        self.opens_at
    }

    /// When buying closes, if it ever does.
    pub fn closes_at(&self) -> Option<UnixMillis> {
        self.closes_at
    }

    /// Whether this window limits nothing ([`SaleWindow::ALWAYS`]).
    pub fn is_always(&self) -> bool {
        *self == Self::ALWAYS
    }

    /// Where the sale stands at `now`: not open before `opens_at`, open from `opens_at` itself,
    /// closed from `closes_at` itself on.
    pub fn state_at(&self, now: UnixMillis) -> SaleState {
        match (self.opens_at, self.closes_at) {
            (Some(opens_at), _) if now < opens_at => SaleState::NotOpen { opens_at },
            (_, Some(closes_at)) if now >= closes_at => SaleState::Closed { closes_at },
            _ => SaleState::Open,
        }
    }
}

impl<'de> Deserialize<'de> for SaleWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The fields as sent, before [`SaleWindow::new`] checks them; a missing one is `None`.
        #[derive(Deserialize)]
        struct Sent {
            opens_at: Option<UnixMillis>,
            closes_at: Option<UnixMillis>,
        }
        let sent = Sent::deserialize(deserializer)?;
        Self::new(sent.opens_at, sent.closes_at).map_err(serde::de::Error::custom)
    }
}

/// Where an event's sale stands at one instant ([`SaleWindow::state_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaleState {
    /// Before the window: buying opens at `opens_at`.
    NotOpen {
        /// When buying opens.
        opens_at: UnixMillis,
    },
    /// Inside the window: buying is open.
    Open,
    /// After the window: buying closed at `closes_at`.
    Closed {
        /// When buying closed.
        closes_at: UnixMillis,
    },
}

impl SaleState {
    /// Whether buying is open.
    pub fn is_open(self) -> bool {
        self == Self::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-24T18:00:00Z.
    const CHRISTMAS_EVE: UnixMillis = UnixMillis(1_798_135_200_000);

    fn at(ms: i64) -> UnixMillis {
        UnixMillis(ms)
    }

    #[test]
    fn a_window_is_open_from_its_opening_and_closed_from_its_closing() {
        let (opens, closes) = (CHRISTMAS_EVE, at(CHRISTMAS_EVE.0 + 3_600_000));
        let w = SaleWindow::new(Some(opens), Some(closes)).unwrap();
        let not_open = SaleState::NotOpen { opens_at: opens };
        let closed = SaleState::Closed { closes_at: closes };
        for (now, state) in [
            (SaleWindow::EARLIEST, not_open),
            (at(opens.0 - 1), not_open),
            (opens, SaleState::Open),
            (at(opens.0 + 1), SaleState::Open),
            (at(closes.0 - 1), SaleState::Open),
            (closes, closed),
            (at(closes.0 + 1), closed),
            (UnixMillis::MAX, closed),
        ] {
            assert_eq!(w.state_at(now), state, "at {now}");
        }
        assert!(w.state_at(opens).is_open());
        assert!(!w.state_at(closes).is_open());
    }

    #[test]
    fn a_missing_end_limits_nothing_that_way() {
        let opens_only = SaleWindow::new(Some(CHRISTMAS_EVE), None).unwrap();
        assert_eq!(
            opens_only.state_at(at(CHRISTMAS_EVE.0 - 1)),
            SaleState::NotOpen {
                opens_at: CHRISTMAS_EVE
            }
        );
        assert_eq!(opens_only.state_at(CHRISTMAS_EVE), SaleState::Open);
        assert_eq!(opens_only.state_at(UnixMillis::MAX), SaleState::Open);

        let closes_only = SaleWindow::new(None, Some(CHRISTMAS_EVE)).unwrap();
        assert_eq!(closes_only.state_at(UnixMillis::MIN), SaleState::Open);
        assert_eq!(
            closes_only.state_at(at(CHRISTMAS_EVE.0 - 1)),
            SaleState::Open
        );
        assert_eq!(
            closes_only.state_at(CHRISTMAS_EVE),
            SaleState::Closed {
                closes_at: CHRISTMAS_EVE
            }
        );

        for now in [UnixMillis::MIN, at(0), UnixMillis::now(), UnixMillis::MAX] {
            assert_eq!(SaleWindow::ALWAYS.state_at(now), SaleState::Open);
        }
        assert!(SaleWindow::ALWAYS.is_always());
        assert_eq!(SaleWindow::default(), SaleWindow::ALWAYS);
        assert_eq!(SaleWindow::new(None, None), Ok(SaleWindow::ALWAYS));
        assert!(!opens_only.is_always() && !closes_only.is_always());
    }

    #[test]
    fn a_window_must_close_after_it_opens_and_within_the_years_2000_to_9999() {
        let later = at(CHRISTMAS_EVE.0 + 1);
        assert_eq!(
            SaleWindow::new(Some(CHRISTMAS_EVE), Some(CHRISTMAS_EVE)),
            Err(DomainError::BadSaleWindow)
        );
        assert_eq!(
            SaleWindow::new(Some(later), Some(CHRISTMAS_EVE)),
            Err(DomainError::BadSaleWindow)
        );
        let w = SaleWindow::new(Some(CHRISTMAS_EVE), Some(later)).unwrap();
        assert_eq!(
            (w.opens_at(), w.closes_at()),
            (Some(CHRISTMAS_EVE), Some(later))
        );

        let before_2000 = at(SaleWindow::EARLIEST.0 - 1);
        let after_9999 = at(SaleWindow::LATEST.0 + 1);
        for (opens, closes, field) in [
            (Some(before_2000), None, "opens_at"),
            (Some(at(0)), Some(CHRISTMAS_EVE), "opens_at"),
            (Some(UnixMillis(i64::MIN)), None, "opens_at"),
            (None, Some(after_9999), "closes_at"),
            (Some(CHRISTMAS_EVE), Some(UnixMillis(i64::MAX)), "closes_at"),
            (None, Some(before_2000), "closes_at"),
            // Both wrong: the first field is named.
            (Some(after_9999), Some(before_2000), "opens_at"),
        ] {
            assert_eq!(
                SaleWindow::new(opens, closes),
                Err(DomainError::BadSaleTime { field }),
                "{opens:?} {closes:?}"
            );
        }
        // The edges themselves are accepted.
        let widest = SaleWindow::new(Some(SaleWindow::EARLIEST), Some(SaleWindow::LATEST));
        assert!(widest.is_ok());

        assert_eq!(
            DomainError::BadSaleTime { field: "opens_at" }.to_string(),
            "opens_at must be between 2000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            DomainError::BadSaleWindow.to_string(),
            "closes_at must be after opens_at"
        );
    }

    #[test]
    fn times_are_rfc_3339_in_json_written_in_utc_with_milliseconds() {
        let json = serde_json::to_string(&CHRISTMAS_EVE).unwrap();
        assert_eq!(json, "\"2026-12-24T18:00:00.000Z\"");
        assert_eq!(
            serde_json::from_str::<UnixMillis>(&json).unwrap(),
            CHRISTMAS_EVE
        );
        assert_eq!(CHRISTMAS_EVE.to_string(), "2026-12-24T18:00:00.000Z");
        for (text, ms) in [
            ("2026-12-24T18:00:00Z", CHRISTMAS_EVE.0),
            ("2026-12-24T19:00:00+01:00", CHRISTMAS_EVE.0),
            ("2026-12-24T12:30:00-05:30", CHRISTMAS_EVE.0),
            ("2026-12-24T18:00:00.5Z", CHRISTMAS_EVE.0 + 500),
            ("2026-12-24T18:00:00.123456789Z", CHRISTMAS_EVE.0 + 123),
            ("1970-01-01T00:00:00Z", 0),
            // A leap second reads as the last millisecond before it (Unix time has none).
            ("2016-12-31T23:59:60Z", 1_483_228_799_999),
            // Before the epoch, sub-millisecond digits still drop towards the past.
            ("1969-12-31T23:59:59.9995Z", -1),
            ("0000-01-01T00:00:00Z", UnixMillis::MIN.0),
            ("9999-12-31T23:59:59.999Z", UnixMillis::MAX.0),
        ] {
            let json = format!("\"{text}\"");
            assert_eq!(
                serde_json::from_str::<UnixMillis>(&json).unwrap(),
                at(ms),
                "{text}"
            );
            assert_eq!(text.parse::<UnixMillis>(), Ok(at(ms)), "{text}");
        }
        assert_eq!(at(-1).to_rfc3339().unwrap(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            UnixMillis::MIN.to_rfc3339().unwrap(),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            UnixMillis::MAX.to_rfc3339().unwrap(),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "\"\"",
            "\"2026-12-24\"",
            "\"2026-12-24T18:00:00\"",
            "\"2026-12-24T18:00Z\"",
            "\"2026-13-01T00:00:00Z\"",
            "\"2026-02-30T00:00:00Z\"",
            "\"2026-12-24T25:00:00Z\"",
            "\"2026-12-24T18:00:00+25:00\"",
            "\"2026-12-24T18:00:00Z trailing\"",
            "\"+12026-12-24T18:00:00Z\"",
            "\"tomorrow\"",
            // Valid text, but in UTC a year RFC 3339 cannot write back.
            "\"0000-01-01T00:00:00+01:00\"",
            "\"9999-12-31T23:59:59-01:00\"",
            // Not a string at all.
            "1798135200000",
            "null",
            "{}",
        ] {
            assert!(
                serde_json::from_str::<UnixMillis>(bad).is_err(),
                "{bad} was accepted"
            );
        }
        assert_eq!(
            "2026-12-24 18:00".parse::<UnixMillis>(),
            Err(DomainError::BadTimestamp)
        );
        // An instant without an RFC 3339 form is not written as one.
        for outside in [
            at(UnixMillis::MIN.0 - 1),
            at(UnixMillis::MAX.0 + 1),
            at(i64::MIN),
        ] {
            assert!(outside.to_rfc3339().is_none());
            assert!(serde_json::to_string(&outside).is_err());
            assert_eq!(
                outside.to_string(),
                format!("{} ms after the Unix epoch", outside.0)
            );
        }
    }

    #[test]
    fn a_window_in_json_names_both_ends_and_is_checked_when_read() {
        let w = SaleWindow::new(Some(CHRISTMAS_EVE), None).unwrap();
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"opens_at":"2026-12-24T18:00:00.000Z","closes_at":null}"#
        );
        assert_eq!(serde_json::from_str::<SaleWindow>(&json).unwrap(), w);
        assert_eq!(
            serde_json::from_str::<SaleWindow>("{}").unwrap(),
            SaleWindow::ALWAYS
        );
        let backwards = r#"{"opens_at":"2026-12-24T18:00:00Z","closes_at":"2026-12-24T17:00:00Z"}"#;
        let e = serde_json::from_str::<SaleWindow>(backwards).unwrap_err();
        assert!(
            e.to_string().contains("closes_at must be after opens_at"),
            "{e}"
        );
        let too_early = r#"{"opens_at":"1999-12-31T23:59:59.999Z"}"#;
        assert!(serde_json::from_str::<SaleWindow>(too_early).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_time_in_range_round_trips_through_json(
            ms in UnixMillis::MIN.0..=UnixMillis::MAX.0,
        ) {
            let t = UnixMillis(ms);
            let json = serde_json::to_string(&t).unwrap();
            // One width: `"YYYY-MM-DDTHH:MM:SS.mmmZ"`.
            proptest::prop_assert_eq!(json.len(), 26, "{}", json);
            proptest::prop_assert_eq!(serde_json::from_str::<UnixMillis>(&json).unwrap(), t);
        }

        #[test]
        fn any_offset_names_the_same_instant(
            ms in SaleWindow::EARLIEST.0..=UnixMillis::MAX.0,
            offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59i32),
        ) {
            let offset = time::UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
            let utc = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * NANOS_PER_MILLI)
                .unwrap();
            let Some(local) = utc.checked_to_offset(offset).filter(|l| (0..=9999).contains(&l.year()))
            else {
                return Ok(());
            };
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}",
                local.year(),
                u8::from(local.month()),
                local.day(),
                local.hour(),
                local.minute(),
                local.second(),
                local.millisecond(),
                offset_minutes.abs() / 60,
                offset_minutes.abs() % 60,
            );
            proptest::prop_assert_eq!(text.parse::<UnixMillis>(), Ok(UnixMillis(ms)), "{}", text);
        }
    }
}
