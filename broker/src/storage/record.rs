//! The on-disk record format.
//!
//! | bytes | field          | notes                                                  |
//! |-------|----------------|--------------------------------------------------------|
//! | 4     | length (`u32`) | bytes after this field                                 |
//! | 4     | crc32c (`u32`) | CRC32C (Castagnoli) of every byte after this field     |
//! | 8     | offset (`u64`) | the record's offset in its partition                   |
//! | 8     | timestamp      | Unix milliseconds when the broker appended it          |
//! | rest  | record         | key, dedup id, headers, payload as in the wire format  |
//!
//! A record is served only if its length fits, its checksum matches, its offset is the one
//! expected at that place and its body decodes exactly.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Reader;
use crate::protocol::Record;

/// Bytes before the record body: length, crc, offset, timestamp.
pub const RECORD_HEADER_BYTES: usize = 24;

/// A record as it sits in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its offset.
    pub offset: u64,
    /// When it was appended (Unix milliseconds).
    pub timestamp_ms: u64,
    /// The record.
    pub record: Record,
}

/// Encoded size of a record on disk.
pub fn encoded_size(record: &Record) -> usize {
    RECORD_HEADER_BYTES + record.encoded_size()
}

/// Appends the on-disk form of a record to `out`.
pub fn encode(offset: u64, timestamp_ms: u64, record: &Record, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    out.put_u32(0);
    out.put_u64(offset);
    out.put_u64(timestamp_ms);
    record.encode(out);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(out.get(start + 8..).unwrap_or_default());
    if let Some(h) = out.get_mut(start..start + 8) {
        h[..4].copy_from_slice(&len.to_be_bytes());
        h[4..].copy_from_slice(&crc.to_be_bytes());
    }
}

/// What [`decode`] found at a place in a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A good record, and the bytes it took.
    Record(StoredRecord, usize),
    /// The bytes end inside a record (a torn write).
    Torn,
    /// The bytes are not a valid record.
    Corrupt(&'static str),
}

/// Decodes the record at the front of `buf`, which must start at a record boundary.
/// `expected_offset` is the offset that must be there; `max_record_bytes` bounds the length.
pub fn decode(buf: &Bytes, expected_offset: u64, max_record_bytes: usize) -> Decoded {
    let Some(h) = buf.get(..8) else {
        return Decoded::Torn;
    };
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if len < RECORD_HEADER_BYTES - 4 + 12 {
        return Decoded::Corrupt("length below the smallest record");
    }
    if len > max_record_bytes {
        return Decoded::Corrupt("length above the record limit");
    }
    let Some(rest) = buf.get(8..4 + len) else {
        return Decoded::Torn;
    };
    if crc32c::crc32c(rest) != crc {
        return Decoded::Corrupt("checksum mismatch");
    }
    let body = buf.slice(8..4 + len);
    let mut r = Reader::shared(&body);
    let (Ok(offset), Ok(timestamp_ms)) = (r.u64("offset"), r.u64("timestamp")) else {
        return Decoded::Corrupt("short header");
    };
    if offset != expected_offset {
        return Decoded::Corrupt("offset out of sequence");
    }
    let Ok(record) = Record::decode(&mut r) else {
        return Decoded::Corrupt("body does not decode");
    };
    if r.finish().is_err() {
        return Decoded::Corrupt("trailing bytes in record");
    }
    Decoded::Record(
        StoredRecord {
            offset,
            timestamp_ms,
            record,
        },
        4 + len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::new(&b"payload"[..])
            .with_key(&b"k"[..])
            .with_dedup_id("d1")
            .with_header("h", &b"v"[..])
    }

    #[test]
    fn round_trip_and_size() {
        let mut out = BytesMut::new();
        encode(42, 1000, &sample(), &mut out);
        assert_eq!(out.len(), encoded_size(&sample()));
        let buf = out.freeze();
        match decode(&buf, 42, 1 << 20) {
            Decoded::Record(r, used) => {
                assert_eq!(used, buf.len());
                assert_eq!(r.offset, 42);
                assert_eq!(r.timestamp_ms, 1000);
                assert_eq!(r.record, sample());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_is_torn_and_every_flip_is_caught() {
        let mut out = BytesMut::new();
        encode(7, 1, &sample(), &mut out);
        let full = out.freeze();
        for cut in 0..full.len() {
            let part = full.slice(..cut);
            assert!(
                matches!(
                    decode(&part, 7, 1 << 20),
                    Decoded::Torn | Decoded::Corrupt(_)
                ),
                "cut at {cut}"
            );
        }
        for i in 0..full.len() {
            let mut v = full.to_vec();
            v[i] ^= 0x40;
            let got = decode(&Bytes::from(v), 7, 1 << 20);
            assert!(!matches!(got, Decoded::Record(..)), "flip at {i} served");
        }
    }
}
