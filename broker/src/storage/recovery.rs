//! Recovery of a segment after a crash.
//!
//! Invariants this module keeps:
//! 1. Only a prefix of whole, checksummed, in-sequence records survives; the first byte that
//!    is not part of such a record starts the tail that is cut.
//! 2. A cut is reported (bytes and reason), logged by the caller and counted in a metric.
//! 3. Scanning is pure: it takes the segment's bytes and returns what to keep, so it is tested
//!    on cut and corrupted buffers without touching a disk.

use bytes::Bytes;

use super::record::{Decoded, decode};

/// The result of scanning one segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// File position of each good record, in order.
    pub positions: Vec<u32>,
    /// Bytes of good records from the start; everything after is to be cut.
    pub valid_len: u64,
    /// Why the tail was cut, when it was.
    pub cut_reason: Option<&'static str>,
    /// Timestamp of the last good record.
    pub last_timestamp_ms: Option<u64>,
    /// Everything after `valid_len` is zeros: space written ahead of the records
    /// (pre-allocation), not a torn or corrupt tail.
    pub zero_tail: bool,
}

/// What recovery did to one partition, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from the tail of the last segment.
    pub truncated_bytes: u64,
    /// Why.
    pub reason: Option<&'static str>,
    /// Index files that had to be rebuilt.
    pub rebuilt_indexes: u32,
}

/// Scans `buf`, the bytes of a segment whose first record has offset `base`.
pub fn scan(buf: &Bytes, base: u64, max_record_bytes: usize) -> Scan {
    let mut positions = Vec::new();
    let mut pos = 0usize;
    let mut last_ts = None;
    let mut cut_reason = None;
    let mut zero_tail = false;
    while pos < buf.len() {
        let Ok(pos32) = u32::try_from(pos) else {
            cut_reason = Some("segment over 4 GiB");
            break;
        };
        let expected = base + positions.len() as u64;
        match decode(&buf.slice(pos..), expected, max_record_bytes) {
            Decoded::Record(rec, used) => {
                positions.push(pos32);
                last_ts = Some(rec.timestamp_ms);
                pos += used;
            }
            Decoded::Torn | Decoded::Corrupt(_)
                if buf
                    .get(pos..)
                    .is_some_and(|rest| rest.iter().all(|b| *b == 0)) =>
            {
                zero_tail = true;
                break;
            }
            Decoded::Torn | Decoded::Corrupt(_)
                if crate::planted::active(crate::planted::Planted::KeepTornRecord) =>
            {
                positions.push(pos32);
                pos = buf.len();
                break;
            }
            Decoded::Torn => {
                cut_reason = Some("torn write: the file ends inside a record");
                break;
            }
            Decoded::Corrupt(why) => {
                cut_reason = Some(why);
                break;
            }
        }
    }
    Scan {
        positions,
        valid_len: pos as u64,
        cut_reason,
        last_timestamp_ms: last_ts,
        zero_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Record;
    use crate::storage::record::encode;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn segment(n: u64, base: u64) -> (Bytes, Vec<usize>) {
        let mut out = BytesMut::new();
        let mut ends = Vec::new();
        for i in 0..n {
            encode(base + i, i, &Record::new(format!("payload-{i}")), &mut out);
            ends.push(out.len());
        }
        (out.freeze(), ends)
    }

    #[test]
    fn clean_segment_keeps_everything() {
        let (buf, ends) = segment(10, 100);
        let s = scan(&buf, 100, 1 << 20);
        assert_eq!(s.positions.len(), 10);
        assert_eq!(s.valid_len, *ends.last().unwrap() as u64);
        assert_eq!(s.cut_reason, None);
    }

    #[test]
    fn a_zero_tail_is_preallocated_space_not_a_cut() {
        let (buf, ends) = segment(3, 0);
        let mut v = buf.to_vec();
        v.resize(v.len() + 4096, 0);
        let s = scan(&Bytes::from(v.clone()), 0, 1 << 20);
        assert_eq!(s.positions.len(), 3);
        assert_eq!(s.valid_len, ends[2] as u64);
        assert!(s.zero_tail);
        assert_eq!(s.cut_reason, None);
        // A torn record inside the pre-written zone is still a cut.
        v[ends[2]] = 0x10;
        let s = scan(&Bytes::from(v), 0, 1 << 20);
        assert!(!s.zero_tail);
        assert!(s.cut_reason.is_some());
    }

    proptest! {
        #[test]
        fn a_cut_anywhere_keeps_exactly_the_whole_records_before_it(cut in 0usize..2000) {
            let (buf, ends) = segment(20, 0);
            let cut = cut.min(buf.len());
            let s = scan(&buf.slice(..cut), 0, 1 << 20);
            let whole = ends.iter().filter(|e| **e <= cut).count();
            prop_assert_eq!(s.positions.len(), whole);
            prop_assert_eq!(s.valid_len, if whole == 0 { 0 } else { ends[whole - 1] as u64 });
        }

        #[test]
        fn a_flipped_byte_cuts_from_its_record(at in 0usize..2000, bit in 0u8..8) {
            let (buf, ends) = segment(20, 0);
            let at = at % buf.len();
            let mut v = buf.to_vec();
            v[at] ^= 1 << bit;
            let s = scan(&Bytes::from(v), 0, 1 << 20);
            let hit = ends.iter().filter(|e| **e <= at).count();
            prop_assert_eq!(s.positions.len(), hit, "records before the damaged one survive");
            prop_assert!(s.cut_reason.is_some());
        }
    }
}
