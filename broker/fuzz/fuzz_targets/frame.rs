//! Arbitrary bytes from a socket: split into frames and decode every request the way the
//! server does. Nothing may panic, and no frame over the limit may be buffered.
#![no_main]

use broker::protocol::frame::{REQUEST_HEADER_BYTES, parse_request_header, split_frame};
use broker::protocol::{ApiKey, Request, Response};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, 64 * 1024, REQUEST_HEADER_BYTES) {
        assert!(frame.len() <= 64 * 1024);
        if let Some((header, body)) = parse_request_header(&frame) {
            if let Some(api) = ApiKey::from_u16(header.api_key) {
                let _ = Request::decode_body(api, &body);
                let _ = Response::decode_body(api, &body);
            }
        }
    }
});
