//! Arbitrary bytes from a client, as the balancer's own server reads them: every head found is
//! parsed, and the head a backend gets for it is the same whether it is written from the
//! client's bytes or through a header map (a differential of the two ways, each re-read with
//! `httparse`: a head either way writes must parse, and a backend must read one request).
#![no_main]

use balancer::downstream::codec::{Forwarding, Front, decode_request_head, find_head};
use balancer::downstream::rewrite_check;
use bytes::BytesMut;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = rewrite_check::check(data) {
        panic!("{e}: {:?}", String::from_utf8_lossy(data));
    }
    // Pipelined heads: each is found, split off and parsed; nothing panics, nothing loops.
    let client = HeaderValue::from_static("10.0.0.9");
    let fwd = Forwarding {
        client: &client,
        tls: true,
        encode: true,
    };
    let mut buf = BytesMut::from(data);
    let mut first = true;
    loop {
        let mut scanned = 0;
        let before = buf.len();
        match find_head(&mut buf, &mut scanned, 16 * 1024, first) {
            Ok(Front::Head(n)) => {
                assert!(n <= buf.len() && n > 0);
                let head = buf.split_to(n).freeze();
                if let Ok(h) = decode_request_head(&head, &fwd) {
                    let _ = h.wants_keep_alive();
                    let _ = h.buffered_body_len(64 * 1024);
                }
            }
            _ => break,
        }
        assert!(buf.len() < before, "a head was found but nothing consumed");
        first = false;
    }
});
