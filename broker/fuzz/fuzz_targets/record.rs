//! Arbitrary segment bytes: recovery's scan must never panic and must keep only whole records.
#![no_main]

use broker::storage::recovery::scan;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let s = scan(&buf, 0, 1 << 20);
    assert!(s.valid_len as usize <= data.len());
    assert_eq!(s.positions.first().copied().unwrap_or(0), 0);
});
