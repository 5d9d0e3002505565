//! Tests of the client-facing HTTP/1.1 codec (unit cases and proptests).

use super::*;
use crate::downstream::rewrite_check::{HeadView, both_ways, normalized, upstream_view};

fn front(text: &str, limit: usize, first: bool) -> (Result<Front, HeadError>, BytesMut) {
    let mut buf = BytesMut::from(text);
    let mut scanned = 0;
    let r = find_head(&mut buf, &mut scanned, limit, first);
    (r, buf)
}

fn client() -> HeaderValue {
    HeaderValue::from_static("10.0.0.9")
}

fn parse_with(text: &str, encode: bool) -> RequestHead {
    let mut buf = BytesMut::from(text);
    let mut scanned = 0;
    let Ok(Front::Head(n)) = find_head(&mut buf, &mut scanned, 8192, true) else {
        panic!("no head in {text:?}");
    };
    let client = client();
    let fwd = Forwarding {
        client: &client,
        tls: false,
        encode,
    };
    decode_request_head(&buf.split_to(n).freeze(), &fwd).expect("parses")
}

fn parse(text: &str) -> RequestHead {
    parse_with(text, false)
}

#[test]
fn finds_heads_skips_blank_lines_and_spots_the_h2_preface() {
    let (r, buf) = front("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 8192, true);
    assert_eq!(r, Ok(Front::Head(27)));
    assert!(buf.starts_with(b"GET /"));
    assert_eq!(
        front("GET / HTTP/1.1\r\nHost:", 8192, true).0,
        Ok(Front::Incomplete)
    );
    assert_eq!(front("PRI * HT", 8192, true).0, Ok(Front::Incomplete));
    assert_eq!(
        front("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 8192, true).0,
        Ok(Front::H2Preface)
    );
    // Only a connection's first bytes can be the preface.
    assert!(matches!(
        front("PRI * HTTP/2.0\r\n\r\n", 8192, false).0,
        Ok(Front::Head(_))
    ));
    assert_eq!(
        front("GET / HTTP/1.1\r\nX: aaaaaaaa", 16, true).0,
        Err(HeadError::TooLarge { limit: 16 })
    );
    assert_eq!(
        front("GET / HTTP/1.1\r\nX: a\r\n\r\n", 16, true).0,
        Err(HeadError::TooLarge { limit: 16 })
    );
}

#[test]
fn a_head_arriving_in_pieces_is_found_once_whole() {
    let text = b"POST /events/1/purchases HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    let mut buf = BytesMut::new();
    let mut scanned = 0;
    let mut found = None;
    for (i, b) in text.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        match find_head(&mut buf, &mut scanned, 8192, true) {
            Ok(Front::Incomplete) => {}
            Ok(Front::Head(n)) => {
                found = Some((i, n));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(found, Some((text.len() - 3, text.len() - 2)));
}

#[test]
fn parses_method_target_version_and_headers() {
    let h = parse(
        "POST /events/7/purchases?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\
         Idempotency-Key: k1\r\nX-Multi: a\r\nX-Multi: b\r\n\r\n",
    );
    assert_eq!(h.method, Method::POST);
    assert_eq!(h.uri.path(), "/events/7/purchases");
    assert_eq!(h.uri.query(), Some("x=1"));
    assert_eq!(h.version, Version::HTTP_11);
    assert_eq!(h.headers["idempotency-key"], "k1");
    assert_eq!(h.headers.get_all("x-multi").iter().count(), 2);
    assert_eq!(h.buffered_body_len(1024), Some(12));
    assert!(h.wants_keep_alive());
}

#[test]
fn keep_alive_follows_the_version_and_connection_header() {
    assert!(!parse("GET / HTTP/1.0\r\n\r\n").wants_keep_alive());
    assert!(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").wants_keep_alive());
    assert!(!parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").wants_keep_alive());
    assert!(!parse("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").wants_keep_alive());
}

#[test]
fn unusual_requests_go_to_hyper() {
    for text in [
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n",
        "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        "GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    ] {
        assert_eq!(parse(text).buffered_body_len(1024), None, "{text:?}");
    }
    assert_eq!(
        parse("GET / HTTP/1.1\r\n\r\n").buffered_body_len(0),
        Some(0)
    );
}

#[test]
fn refuses_malformed_heads_with_the_status_hyper_would() {
    let client = client();
    let fwd = Forwarding {
        client: &client,
        tls: false,
        encode: true,
    };
    let decode = |t: &str| decode_request_head(&Bytes::copy_from_slice(t.as_bytes()), &fwd);
    let bad = decode("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n").unwrap_err();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let version = decode("GET / HTTP/2.0\r\n\r\n").unwrap_err();
    assert_eq!(version.status(), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    assert_eq!(
        decode("GET / HTTP/1.1\r\nX: \x01\r\n\r\n")
            .unwrap_err()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        HeadError::TooLarge { limit: 1 }.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
}

fn head_text(
    status: StatusCode,
    pairs: &[(&str, &str)],
    framing: Framing,
    keep: bool,
    http10: bool,
) -> String {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let mut buf = Vec::new();
    encode_response_head(&mut buf, status, &map, framing, keep, http10);
    String::from_utf8(buf).unwrap()
}

#[test]
fn response_heads_carry_our_framing_and_connection_headers() {
    let t = head_text(
        StatusCode::ACCEPTED,
        &[
            ("content-type", "application/json"),
            ("content-length", "99"),
            ("connection", "close"),
            ("date", "Sat, 28 Nov 2026 12:00:00 GMT"),
        ],
        Framing::Length(12),
        true,
        false,
    );
    assert_eq!(
        t,
        "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
         date: Sat, 28 Nov 2026 12:00:00 GMT\r\ncontent-length: 12\r\n\r\n"
    );
    let t = head_text(StatusCode::OK, &[], Framing::Chunked, false, false);
    assert!(t.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{t}");
    assert!(t.ends_with("GMT\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"));
    let t = head_text(StatusCode::OK, &[], Framing::Length(0), true, true);
    assert!(
        t.ends_with("content-length: 0\r\nconnection: keep-alive\r\n\r\n"),
        "{t}"
    );
    // HEAD and 304 keep the length they describe; 204 drops it.
    let t = head_text(
        StatusCode::OK,
        &[("content-length", "5"), ("date", "d")],
        Framing::NoBody,
        true,
        false,
    );
    assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: d\r\n\r\n");
    let t = head_text(
        StatusCode::NO_CONTENT,
        &[("content-length", "0"), ("date", "d")],
        Framing::NoBody,
        true,
        false,
    );
    assert_eq!(t, "HTTP/1.1 204 No Content\r\ndate: d\r\n\r\n");
}

#[test]
fn framing_rules() {
    let ok = StatusCode::OK;
    assert_eq!(
        Framing::of(&Method::HEAD, ok, Some(0), true),
        Framing::NoBody
    );
    assert_eq!(
        Framing::of(&Method::GET, StatusCode::NOT_MODIFIED, None, true),
        Framing::NoBody
    );
    assert_eq!(
        Framing::of(&Method::GET, ok, Some(3), true),
        Framing::Length(3)
    );
    assert_eq!(Framing::of(&Method::GET, ok, None, true), Framing::Chunked);
    assert_eq!(Framing::of(&Method::GET, ok, None, false), Framing::Close);
}

#[test]
fn asks_close_reads_every_token() {
    let mut map = HeaderMap::new();
    assert!(!asks_close(&map));
    map.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    assert!(!asks_close(&map));
    map.append(header::CONNECTION, HeaderValue::from_static("foo, Close"));
    assert!(asks_close(&map));
}

fn via_map(text: &str) -> Option<HeadView> {
    let (_, mapped) = both_ways(text.as_bytes(), &client())?;
    mapped.as_deref().and_then(upstream_view)
}

fn via_bytes(text: &str) -> Option<HeadView> {
    let head = parse_with(text, true);
    assert!(head.encoded.is_none() || head.headers.is_empty());
    head.encoded.as_deref().and_then(upstream_view)
}

#[test]
fn a_target_with_a_fragment_is_refused() {
    // Found by the request_head fuzzer: the byte way sent `/#`, the map way `/`.
    let mut buf = BytesMut::from("POST /# HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut scanned = 0;
    let Ok(Front::Head(n)) = find_head(&mut buf, &mut scanned, 8192, true) else {
        panic!("no head");
    };
    let client = client();
    let fwd = Forwarding {
        client: &client,
        tls: false,
        encode: true,
    };
    assert_eq!(
        decode_request_head(&buf.split_to(n).freeze(), &fwd).err(),
        Some(HeadError::Invalid("target"))
    );
}

#[test]
fn an_encoded_request_says_whether_it_carries_an_idempotency_key() {
    let keyed = |text: &str| match parse_with(text, true)
        .into_request(Bytes::new())
        .into_body()
    {
        InBody::Encoded {
            idempotency_key, ..
        } => idempotency_key,
        other => panic!("not encoded: {other:?}"),
    };
    assert!(keyed(
        "POST /p HTTP/1.1\r\nHost: a\r\nIdempotency-Key: k\r\n\r\n"
    ));
    assert!(keyed(
        "POST /p HTTP/1.1\r\nHost: a\r\nidempotency-KEY: k\r\n\r\n"
    ));
    assert!(!keyed(
        "POST /p HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    ));
    assert!(!keyed(
        "POST /p HTTP/1.1\r\nHost: a\r\nIdempotency-Keys: k\r\n\r\n"
    ));
}

#[test]
fn an_ordinary_head_is_written_for_the_backend_without_a_map() {
    let text = "POST /events/1/purchases?x=1 HTTP/1.1\r\nHost: shop\r\n\
                Content-Type: application/json\r\nContent-Length: 2\r\n\
                Connection: keep-alive\r\nIdempotency-Key: k\r\n\
                X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n\r\n";
    let head = parse_with(text, true);
    assert!(head.headers.is_empty());
    assert_eq!(head.buffered_body_len(1024), Some(2));
    let (line, headers) = upstream_view(head.encoded.as_deref().unwrap()).unwrap();
    assert_eq!(line, "POST /events/1/purchases?x=1 1.1");
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("host"), ["shop"]);
    assert_eq!(get("idempotency-key"), ["k"]);
    assert_eq!(get("content-length"), ["2"]);
    assert!(get("connection").is_empty());
    assert_eq!(get("x-forwarded-for"), ["1.2.3.4, 10.0.0.9"]);
    assert_eq!(get("x-forwarded-proto"), ["http"]);
    assert_eq!(get("x-forwarded-host"), ["shop"]);
    assert_eq!(get("x-request-id").len(), 1);
    // Heads the byte path would get wrong go through the map.
    for odd in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nX-Request-Id: 2\r\n\r\n",
        "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: é\r\n\r\n",
    ] {
        assert!(parse_with(odd, true).encoded.is_none(), "{odd:?}");
    }
    assert!(
        parse_with(text, false).encoded.is_none(),
        "not when told not to"
    );
}

proptest::proptest! {
    /// The head written from bytes equals the one the proxy makes through a map, for
    /// any mix of ordinary, hop-by-hop and forwarding headers.
    #[test]
    fn bytes_and_map_rewrite_a_head_alike(
        picks in proptest::collection::vec(0usize..22, 0..10),
        target in "(/|/a/b|/p\\?q=1&r=%20)",
        method in "(GET|POST|DELETE|HEAD)",
    ) {
        const POOL: [&str; 22] = [
            "Host: shop.example", "X-Forwarded-For: 1.2.3.4", "X-Forwarded-For: ",
            "x-forwarded-for: 5.6.7.8, 9.9.9.9", "X-Request-Id: abc-123",
            "X-Request-Id: has space", "Connection: keep-alive", "Connection: close",
            "Keep-Alive: timeout=5", "TE: trailers", "Trailer: x",
            "Proxy-Authorization: Basic eA==", "Proxy-Connection: keep-alive",
            "Content-Length: 0", "Content-Type: application/json",
            "X-Forwarded-Proto: https", "X-Forwarded-Host: elsewhere", "Accept: */*",
            "User-Agent: crowd/1", "X-Custom: v1", "x-custom: v2", "Idempotency-Key: k",
        ];
        let mut text = format!("{method} {target} HTTP/1.1\r\n");
        for i in &picks {
            text.push_str(POOL[*i]);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        let client_id = picks.contains(&4).then_some("abc-123");
        if let Some(bytes) = via_bytes(&text) {
            let map = via_map(&text);
            proptest::prop_assert!(map.is_some(), "the map path refused {text:?}");
            proptest::prop_assert_eq!(
                normalized(bytes, client_id),
                normalized(map.unwrap_or_default(), client_id),
                "{:?}", text
            );
        } else {
            // Only the cases the byte path leaves to the map.
            let hosts = picks.iter().filter(|i| **i == 0).count();
            let ids = picks.iter().filter(|i| **i == 4 || **i == 5).count();
            proptest::prop_assert!(hosts != 1 || ids > 1, "{text:?}");
        }
    }
}
