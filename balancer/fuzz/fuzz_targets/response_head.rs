//! Arbitrary bytes from a backend: the response head is parsed as a map and as raw bytes, and
//! its framing decided for every method. Nothing may panic; both forms agree on the status and
//! on the framing, and a chunked response never keeps a Content-Length.
#![no_main]

use balancer::upstream::codec::{HeadForm, decode_response_head_as, response_framing};
use bytes::BytesMut;
use http::{Method, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let method =
        [Method::GET, Method::HEAD, Method::POST, Method::CONNECT][usize::from(pick % 4)].clone();
    let parse = |form| {
        let mut buf = BytesMut::from(rest);
        let mut scanned = 0;
        decode_response_head_as(&mut buf, 16 * 1024, &mut scanned, form)
    };
    let (map, raw) = (parse(HeadForm::Map), parse(HeadForm::Raw));
    assert_eq!(
        map.is_ok(),
        raw.is_ok(),
        "the two forms disagree on {rest:?}"
    );
    let (Ok(Some(mut map)), Ok(Some(mut raw))) = (map, raw) else {
        return;
    };
    assert_eq!(map.status, raw.status);
    let framing = response_framing(&method, &mut map);
    let raw_framing = response_framing(&method, &mut raw);
    assert_eq!(
        framing.as_ref().map(|f| f.0).ok(),
        raw_framing.as_ref().map(|f| f.0).ok(),
        "framing differs for {rest:?}"
    );
    if let Ok((balancer::upstream::codec::BodyFraming::Chunked, _)) = framing {
        assert!(map.headers.get(header::CONTENT_LENGTH).is_none());
    }
});
