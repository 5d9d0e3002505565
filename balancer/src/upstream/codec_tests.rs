//! Tests of the upstream HTTP/1.1 codec (unit cases and proptests).

use super::*;
use proptest::prelude::*;

fn head(text: &str) -> Result<Option<ResponseHead>, HeadError> {
    decode_response_head(&mut BytesMut::from(text), MAX_RESPONSE_HEAD_BYTES, &mut 0)
}

#[test]
fn request_head_is_one_buffer_with_framing() {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("t"));
    h.append("x-a", HeaderValue::from_static("1"));
    h.append("x-a", HeaderValue::from_static("2"));
    let b = encode_request_head(&Method::POST, "/p?q=1", &h, true);
    assert_eq!(
        &b[..],
        b"POST /p?q=1 HTTP/1.1\r\nhost: t\r\nx-a: 1\r\nx-a: 2\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let b = encode_request_head(&Method::GET, "/", &HeaderMap::new(), false);
    assert_eq!(&b[..], b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn parses_a_head_and_leaves_the_body() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: a\r\nConnection: keep-alive\r\n\r\nhello",
    );
    let h = decode_response_head(&mut buf, 1024, &mut 0)
        .unwrap()
        .unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.headers["x-backend"], "a");
    assert!(h.is_keep_alive());
    assert_eq!(&buf[..], b"hello");
    assert!(head("HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
}

#[test]
fn bare_lf_heads_and_stray_line_ends_are_read() {
    let h = head("HTTP/1.1 204 No Content\nX-A: 1\n\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.status, 204);
    assert_eq!(h.headers["x-a"], "1");
    let mut buf = BytesMut::from("\r\n\r\nHTTP/1.1 200 OK\r\n\r\nrest");
    let h = decode_response_head(&mut buf, 1024, &mut 0)
        .unwrap()
        .unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(&buf[..], b"rest");
    // Fed a byte at a time, the search resumes where it stopped.
    let wire = b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n";
    let (mut buf, mut scanned) = (BytesMut::new(), 0);
    for (i, b) in wire.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = decode_response_head(&mut buf, 1024, &mut scanned).unwrap();
        assert_eq!(got.is_some(), i == wire.len() - 1, "at byte {i}");
    }
}

#[test]
fn keep_alive_rules() {
    let ka = |t: &str| head(t).unwrap().unwrap().is_keep_alive();
    assert!(ka("HTTP/1.1 200 OK\r\n\r\n"));
    assert!(!ka("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n"));
    assert!(!ka("HTTP/1.0 200 OK\r\n\r\n"));
    assert!(ka("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n"));
}

#[test]
fn bad_heads_are_errors_not_panics() {
    assert!(matches!(
        head("HTTX/1.1 200\r\n\r\n"),
        Err(HeadError::Malformed(_))
    ));
    assert!(head("HTTP/1.1 99 X\r\n\r\n").is_err());
    let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(100));
    assert_eq!(
        decode_response_head(&mut BytesMut::from(big.as_str()), 64, &mut 0).unwrap_err(),
        HeadError::TooLarge { limit: 64 }
    );
    let unfinished = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(100));
    assert_eq!(
        decode_response_head(&mut BytesMut::from(unfinished.as_str()), 64, &mut 0).unwrap_err(),
        HeadError::TooLarge { limit: 64 }
    );
    let many: String = (0..=MAX_RESPONSE_HEADERS)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    assert!(matches!(
        head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
        Err(HeadError::Malformed(httparse::Error::TooManyHeaders))
    ));
}

fn framing(method: Method, text: &str) -> Result<(BodyFraming, bool), HeadError> {
    let mut h = head(text).unwrap().unwrap();
    response_framing(&method, &mut h)
}

#[test]
fn body_framing_rules() {
    use BodyFraming::*;
    let get = || Method::GET;
    assert_eq!(
        framing(Method::HEAD, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
        Ok((Empty, true))
    );
    for s in ["204 No Content", "304 Not Modified", "100 Continue"] {
        let t = format!("HTTP/1.1 {s}\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(framing(get(), &t), Ok((Empty, true)), "{s}");
    }
    assert_eq!(
        framing(get(), "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
        Ok((Length(9), true))
    );
    assert_eq!(
        framing(get(), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        Ok((Empty, true))
    );
    assert_eq!(
        framing(
            get(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        Ok((Chunked, true))
    );
    assert_eq!(
        framing(
            get(),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        Ok((Chunked, false))
    );
    assert_eq!(
        framing(get(), "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
        Ok((Close, false))
    );
    assert_eq!(
        framing(get(), "HTTP/1.1 200 OK\r\n\r\n"),
        Ok((Close, false))
    );
    assert_eq!(
        framing(
            get(),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
        ),
        Err(HeadError::BadLength)
    );
    assert_eq!(
        framing(get(), "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n"),
        Err(HeadError::BadLength)
    );
}

fn dechunk_all(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), ChunkError> {
    let mut d = ChunkedDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for p in pieces {
        buf.extend_from_slice(p);
        while let Some(data) = d.next_data(&mut buf)? {
            out.extend_from_slice(&data);
        }
    }
    Ok((out, d.is_done()))
}

#[test]
fn chunked_decoding() {
    let body = b"5;ext=1\r\nhello\r\n1 \r\n \r\n0\r\nX-Trailer: t\r\n\r\n";
    assert_eq!(dechunk_all(&[body]), Ok((b"hello ".to_vec(), true)));
    assert!(dechunk_all(&[b"zz\r\n"]).is_err());
    assert!(dechunk_all(&[b"5\r\nhelloX\r\n"]).is_err());
    assert_eq!(
        dechunk_all(&[b"11111111111111111\r\n"]),
        Err(ChunkError::SizeTooLarge)
    );
    let (out, done) = dechunk_all(&[b"3\r\nab"]).unwrap();
    assert_eq!((out.as_slice(), done), (&b"ab"[..], false));
}

/// A chunked encoding of `body` cut into chunks of the given sizes (the rest in one).
fn encode_chunked(body: &[u8], sizes: &[usize], trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    for &s in sizes {
        if rest.is_empty() {
            break;
        }
        let n = s.clamp(1, rest.len());
        out.extend_from_slice(format!("{n:X};x=y\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if trailer {
        out.extend_from_slice(b"x-t: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn split_at_points<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for p in points {
        pieces.push(&bytes[at..p]);
        at = p;
    }
    pieces.push(&bytes[at..]);
    pieces
}

/// Reads a whole response from `pieces` the way the connection does: head first, then
/// the body by its framing. Returns status, body and whether the connection is reusable.
fn read_response(pieces: &[&[u8]]) -> Option<(u16, Vec<u8>, bool)> {
    let mut buf = BytesMut::new();
    let mut pieces = pieces.iter();
    let mut scanned = 0;
    let mut head = loop {
        if let Some(h) =
            decode_response_head(&mut buf, MAX_RESPONSE_HEAD_BYTES, &mut scanned).ok()?
        {
            break h;
        }
        buf.extend_from_slice(pieces.next()?);
    };
    let (framing, reusable) = response_framing(&Method::GET, &mut head).ok()?;
    let mut body = Vec::new();
    let mut dec = ChunkedDecoder::new();
    loop {
        match framing {
            BodyFraming::Empty => break,
            BodyFraming::Length(n) => {
                let want = usize::try_from(n).ok()?;
                if buf.len() >= want {
                    body.extend_from_slice(&buf.split_to(want));
                    break;
                }
            }
            BodyFraming::Chunked => {
                while let Some(d) = dec.next_data(&mut buf).ok()? {
                    body.extend_from_slice(&d);
                }
                if dec.is_done() {
                    break;
                }
            }
            BodyFraming::Close => {
                body.extend_from_slice(&buf.split());
            }
        }
        match pieces.next() {
            Some(p) => buf.extend_from_slice(p),
            None if framing == BodyFraming::Close => break,
            None => return None,
        }
    }
    Some((head.status.as_u16(), body, reusable && buf.is_empty()))
}

proptest! {
    #[test]
    fn chunked_any_split_gives_the_body(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in proptest::collection::vec(1usize..200, 0..8),
        trailer in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let wire = encode_chunked(&body, &sizes, trailer);
        let pieces = split_at_points(&wire, &cuts);
        prop_assert_eq!(dechunk_all(&pieces), Ok((body, true)));
    }

    #[test]
    fn responses_any_split_give_the_same_result(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        kind in 0u8..3,
        sizes in proptest::collection::vec(1usize..100, 0..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\nX-Backend: a\r\n".to_vec();
        match kind {
            0 => {
                wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                wire.extend_from_slice(&body);
            }
            1 => {
                wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                wire.extend_from_slice(&encode_chunked(&body, &sizes, false));
            }
            _ => {
                wire.extend_from_slice(b"Connection: close\r\n\r\n");
                wire.extend_from_slice(&body);
            }
        }
        let whole = read_response(&[&wire]);
        prop_assert!(whole.is_some());
        let pieces = split_at_points(&wire, &cuts);
        prop_assert_eq!(read_response(&pieces), whole.clone());
        let (status, got, reusable) = whole.unwrap_or_default();
        prop_assert_eq!(status, 200);
        prop_assert_eq!(got, body);
        prop_assert_eq!(reusable, kind != 2);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(mut h)) = decode_response_head(&mut buf, 256, &mut 0) {
            let _ = response_framing(&Method::GET, &mut h);
        }
        let mut d = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = d.next_data(&mut buf) {}
    }
}

#[test]
fn a_raw_head_keeps_what_is_passed_on_as_sent() {
    let text = "HTTP/1.1 503 Service Unavailable\r\nX-Case: Kept\r\nConnection: keep-alive\r\n\
                Keep-Alive: timeout=5\r\nContent-Length: 4\r\nRetry-After: 2\r\n\
                Transfer-Encoding: identity\r\nUpgrade: h2c\r\nTE: trailers\r\n\
                Trailer: x\r\nProxy-Authenticate: Basic\r\nProxy-Connection: keep-alive\r\n\r\n";
    let mut buf = BytesMut::from(text);
    let h = decode_response_head_as(&mut buf, 1024, &mut 0, HeadForm::Raw)
        .unwrap()
        .unwrap();
    assert!(h.headers.is_empty(), "no map is built");
    let raw = h.raw.as_ref().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&raw.headers),
        "X-Case: Kept\r\nRetry-After: 2\r\n"
    );
    assert_eq!(raw.length, Some(4));
    assert!(raw.retry_after && !raw.date);
    assert!(h.has_retry_after() && h.is_keep_alive());

    // The same facts as the map form decides framing from.
    let mut buf = BytesMut::from(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\nDate: d\r\n\r\n",
    );
    let mut h = decode_response_head_as(&mut buf, 1024, &mut 0, HeadForm::Raw)
        .unwrap()
        .unwrap();
    assert!(h.raw.as_ref().unwrap().date);
    assert_eq!(
        response_framing(&Method::GET, &mut h).unwrap_err(),
        HeadError::BadLength
    );
    let mut buf = BytesMut::from("HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n");
    let h = decode_response_head_as(&mut buf, 1024, &mut 0, HeadForm::Raw)
        .unwrap()
        .unwrap();
    assert!(!h.is_keep_alive());
}

#[test]
fn a_head_naming_headers_in_connection_is_kept_as_a_map() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n",
    );
    let h = decode_response_head_as(&mut buf, 1024, &mut 0, HeadForm::Raw)
        .unwrap()
        .unwrap();
    assert!(h.raw.is_none());
    assert_eq!(
        h.headers["x-secret"], "1",
        "the proxy strips it from the map"
    );
}

proptest! {
    /// The raw form notes the same framing facts as the map form, whatever the headers.
    #[test]
    fn raw_and_map_forms_agree_on_framing(
        length in proptest::option::of("[0-9 ,x]{0,8}"),
        te in proptest::option::of("(chunked|gzip|gzip, chunked|identity)"),
        conn in proptest::option::of("(close|keep-alive|Close, upgrade|x)"),
    ) {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        if let Some(l) = &length { text.push_str(&format!("Content-Length: {l}\r\n")); }
        if let Some(t) = &te { text.push_str(&format!("Transfer-Encoding: {t}\r\n")); }
        if let Some(c) = &conn { text.push_str(&format!("Connection: {c}\r\n")); }
        text.push_str("\r\n");
        let decode = |form| decode_response_head_as(&mut BytesMut::from(text.as_str()), 1024, &mut 0, form);
        let (map, raw) = (decode(HeadForm::Map), decode(HeadForm::Raw));
        match (map, raw) {
            (Ok(Some(mut m)), Ok(Some(mut r))) => {
                prop_assert_eq!(m.is_keep_alive(), r.is_keep_alive());
                let fm = response_framing(&Method::GET, &mut m);
                let fr = response_framing(&Method::GET, &mut r);
                prop_assert_eq!(fm, fr);
            }
            (m, r) => prop_assert_eq!(m.is_err(), r.is_err()),
        }
    }
}
