//! Where a message head ends in a read buffer: stray line ends before it are dropped
//! (RFC 9112 §2.2), and its end (the first empty line, CRLF or bare LF) is found with a SIMD
//! newline search that resumes where an incomplete head's last search stopped, so a head
//! arriving a byte at a time is not searched over and over. The limit is checked before more
//! is read.

use bytes::{Buf, BytesMut};

/// Drops stray line ends at the front of `buf` (before a head; RFC 9112 §2.2).
pub(crate) fn skip_blank_lines(buf: &mut BytesMut, scanned: &mut usize) {
    let blank = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if blank > 0 {
        buf.advance(blank);
        *scanned = 0;
    }
}

/// Where the head at the front of `buf` ends: `Ok(None)` while incomplete, `Err(())` once it
/// is longer than `limit`. `scanned` remembers how far an incomplete head was searched
/// (start it at 0; it is reset when a head is found).
pub(crate) fn find_head_end(
    buf: &[u8],
    scanned: &mut usize,
    limit: usize,
) -> Result<Option<usize>, ()> {
    let Some(end) = head_end(buf, *scanned) else {
        *scanned = buf.len();
        return if buf.len() >= limit {
            Err(())
        } else {
            Ok(None)
        };
    };
    *scanned = 0;
    if end > limit {
        return Err(());
    }
    Ok(Some(end))
}

/// Where the head in `buf` ends (just past its empty line), searching from about `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(2);
    let rest = buf.get(start..)?;
    memchr::memchr_iter(b'\n', rest).find_map(|i| {
        let i = start + i;
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}
