//! What a message head's framing headers say (`Content-Length`, `Transfer-Encoding`,
//! `Connection`, and the `Retry-After` and `Date` a server needs), noted header by header
//! in the one pass that builds the map or copies the raw head, so deciding the body's
//! framing afterwards needs no map lookups. Conflicting or non-numeric lengths are noted,
//! not refused: each codec decides what they cost.

use http::header::{HeaderName, HeaderValue};

/// The framing-relevant headers of a message head, gathered in the one pass over its
/// headers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeadFacts {
    /// The Content-Length, when every value agreed.
    pub(crate) length: Option<u64>,
    /// A Content-Length was not a number, or values differed.
    pub(crate) bad_length: bool,
    /// Some Transfer-Encoding was present.
    pub(crate) has_transfer_encoding: bool,
    /// The last transfer coding was `chunked`.
    pub(crate) chunked: bool,
    /// `Connection: close`.
    pub(crate) close: bool,
    /// `Connection: keep-alive`.
    pub(crate) keep_alive: bool,
    /// `Connection` names a header (a token other than close, keep-alive, upgrade).
    pub(crate) names_headers: bool,
    /// `Retry-After` is present.
    pub(crate) retry_after: bool,
    /// `Date` is present.
    pub(crate) date: bool,
}

impl HeadFacts {
    /// Notes one header.
    pub(crate) fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.note_raw(name.as_str().as_bytes(), value.as_bytes());
    }

    /// Notes one header given as bytes (the name in any case).
    pub(crate) fn note_raw(&mut self, name: &[u8], value: &[u8]) {
        // The length settles most names without comparing text.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"date") => self.date = true,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                // The usual values first, without splitting.
                if value.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                    return;
                }
                if value.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                    return;
                }
                for token in text(value).unwrap_or("close").split(',') {
                    let token = token.trim();
                    if token.eq_ignore_ascii_case("close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        self.keep_alive = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case("upgrade") {
                        self.names_headers = true;
                    }
                }
            }
            11 if name.eq_ignore_ascii_case(b"retry-after") => self.retry_after = true,
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // The usual value, digits only, first.
                if !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit) {
                    let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                    match self.length {
                        Some(prev) if prev != n => self.bad_length = true,
                        _ => self.length = Some(n),
                    }
                    return;
                }
                // Every comma-separated element of every Content-Length must be the same
                // number.
                for part in text(value).unwrap_or("x").split(',') {
                    let part = part.trim();
                    let n = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| part.parse::<u64>().ok())
                        .flatten();
                    match (n, self.length) {
                        (Some(n), Some(prev)) if prev != n => self.bad_length = true,
                        (Some(n), _) => self.length = Some(n),
                        (None, _) => self.bad_length = true,
                    }
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.has_transfer_encoding = true;
                // The last coding of the last header decides.
                if let Some(last) = text(value)
                    .unwrap_or("x")
                    .split(',')
                    .map(str::trim)
                    .rfind(|s| !s.is_empty())
                {
                    self.chunked = last.eq_ignore_ascii_case("chunked");
                }
            }
            _ => {}
        }
    }
}

/// A header value as text when it is visible ASCII, spaces and tabs only (as
/// `HeaderValue::to_str` has it).
fn text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}
