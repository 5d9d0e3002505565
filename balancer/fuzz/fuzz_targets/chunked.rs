//! Arbitrary bytes as a chunked body: decoding it in one piece and split at any point gives the
//! same body and the same verdict, the decoder never returns more data than it was given, and
//! it never stops consuming input without saying why.
#![no_main]

use balancer::upstream::codec::ChunkedDecoder;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

/// Feeds `pieces` one after another; returns the body, whether it ended, whether it failed.
fn decode(pieces: &[&[u8]]) -> (Vec<u8>, bool, bool) {
    let mut d = ChunkedDecoder::new();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match d.next_data(&mut buf) {
                Ok(Some(data)) => {
                    let data: Bytes = data;
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                Ok(None) => break,
                Err(_) => return (body, false, true),
            }
        }
        if d.is_done() {
            return (body, true, false);
        }
    }
    (body, d.is_done(), false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = decode(&[body]);
    assert!(whole.0.len() <= body.len());
    let at = usize::from(cut).min(body.len());
    let (a, b) = body.split_at(at);
    let split = decode(&[a, b]);
    assert_eq!(whole, split, "split at {at} changes the result");
});
