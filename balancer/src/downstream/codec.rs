//! The client-facing HTTP/1.1 wire format, sans I/O: finding and parsing a request head,
//! deciding whether the balancer's own server answers it or hands the connection to hyper,
//! and writing the response head. [`super::conn`] moves the bytes.
//!
//! Request head: its end (the first empty line) is found with the same SIMD newline search
//! as a response head's ([`crate::upstream::codec::head_end`]); stray line ends before it
//! are skipped (RFC 9112 §2.2). The head is split off the read buffer, frozen, and parsed
//! once with `httparse` into at most [`MAX_REQUEST_HEADERS`] headers; the target and every
//! header value are slices of the frozen head (no copy). A head longer than the limit is
//! refused with 431, a malformed one with 400, as hyper refuses them.
//!
//! Response head: `HTTP/1.1 status reason`, the response's headers as the map holds them
//! (minus `Connection`, `Content-Length` and `Transfer-Encoding`, which the server writes
//! itself from what it knows), a `Date` when the response has none (hyper's rule), the
//! framing, and `Connection: close` when the connection ends after this response (or
//! `keep-alive` to an HTTP/1.0 client that keeps it).

use std::cell::RefCell;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::body::InBody;
use crate::upstream::codec::{HeadFacts, RawHead, head_end};

/// Most request headers accepted (hyper's default too).
pub const MAX_REQUEST_HEADERS: usize = 100;

/// Headers the proxy may add to a request on its way to a backend.
const FORWARDING_HEADERS: usize = 4;

/// The HTTP/2 connection preface's first line: a client speaking h2 with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Longer than the limit without ending.
    #[error("request head longer than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not HTTP/1.x request syntax.
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    /// An empty line ended the head but the parser wanted more.
    #[error("malformed request head")]
    Unterminated,
    /// A method, target, header name or value `http` does not accept.
    #[error("invalid {0} in the request head")]
    Invalid(&'static str),
}

impl HeadError {
    /// The status the client gets before the connection closes.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Malformed(httparse::Error::Version) => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// What the front of a connection's read buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Not a whole head yet: read more.
    Incomplete,
    /// The HTTP/2 preface (prior knowledge): hyper's server takes the connection.
    H2Preface,
    /// A whole request head of this many bytes.
    Head(usize),
}

/// Finds the request head at the front of `buf`. Stray line ends before it are dropped.
/// `scanned` remembers how far an incomplete head was searched (start it at 0 and reset it
/// after each head), `first` is true until the connection's first request.
pub fn find_head(
    buf: &mut BytesMut,
    scanned: &mut usize,
    limit: usize,
    first: bool,
) -> Result<Front, HeadError> {
    let blank = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if blank > 0 {
        buf.advance(blank);
        *scanned = 0;
    }
    if first && !buf.is_empty() {
        let n = buf.len().min(H2_PREFACE.len());
        if buf.get(..n) == H2_PREFACE.get(..n) {
            return Ok(if n == H2_PREFACE.len() {
                Front::H2Preface
            } else {
                Front::Incomplete
            });
        }
    }
    let Some(end) = head_end(buf, *scanned) else {
        *scanned = buf.len();
        if buf.len() >= limit {
            return Err(HeadError::TooLarge { limit });
        }
        return Ok(Front::Incomplete);
    };
    *scanned = 0;
    if end > limit {
        return Err(HeadError::TooLarge { limit });
    }
    Ok(Front::Head(end))
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The target as sent (origin form, usually).
    pub uri: Uri,
    /// HTTP/1.1 or HTTP/1.0.
    pub version: Version,
    /// The headers, values sharing the frozen head.
    pub headers: HeaderMap,
    /// What the framing headers said.
    facts: HeadFacts,
}

impl RequestHead {
    /// The client keeps the connection open after this exchange (RFC 9112 §9.3).
    pub fn wants_keep_alive(&self) -> bool {
        !self.facts.close && (self.version == Version::HTTP_11 || self.facts.keep_alive)
    }

    /// The body's length when the balancer's own server can take this request: no body or
    /// a valid Content-Length of at most `max_body` bytes; no Transfer-Encoding, no `Expect`,
    /// no protocol switch and not CONNECT. `None`: hyper's server takes the connection from
    /// here (it streams chunked and large bodies, answers `100 Continue`, switches
    /// protocols, and refuses what the contract refuses, through the same proxy code).
    pub fn buffered_body_len(&self, max_body: u64) -> Option<usize> {
        if self.facts.has_transfer_encoding
            || self.facts.bad_length
            || self.method == Method::CONNECT
            || self.headers.contains_key(header::EXPECT)
            || self.headers.contains_key(header::UPGRADE)
        {
            return None;
        }
        let len = self.facts.length.unwrap_or(0);
        if len > max_body {
            return None;
        }
        usize::try_from(len).ok()
    }

    /// The request to forward, with its whole body.
    pub fn into_request(self, body: Bytes) -> Request<InBody> {
        let mut req = Request::new(InBody::Buffered(body));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Parses the request head `head` (exactly one head, as [`find_head`] measured it).
pub fn decode_request_head(head: &Bytes) -> Result<RequestHead, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, head, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(HeadError::Unterminated),
        Err(e) => return Err(HeadError::Malformed(e)),
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Invalid("method"))?;
    let path = req.path.unwrap_or_default();
    let uri = Uri::from_maybe_shared(head.slice_ref(path.as_bytes()))
        .map_err(|_| HeadError::Invalid("target"))?;
    let version = if req.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // Room for the four headers the proxy adds (X-Forwarded-For, -Proto, -Host, X-Request-Id):
    // a map that has to grow for them rehashes everything (~2k instructions per request).
    let mut headers = HeaderMap::with_capacity(req.headers.len() + FORWARDING_HEADERS);
    let mut facts = HeadFacts::default();
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Invalid("header"))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value))
            .map_err(|_| HeadError::Invalid("header value"))?;
        facts.note(&name, &value);
        headers.append(name, value);
    }
    Ok(RequestHead {
        method,
        uri,
        version,
        headers,
        facts,
    })
}

/// How a response body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304); a `Content-Length` the response carries is
    /// passed on for HEAD and 304 (it describes the resource), dropped otherwise.
    NoBody,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (an HTTP/1.1 client, length unknown).
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

impl Framing {
    /// The framing of a `status` response to `method` whose body is `len` bytes if known,
    /// for a client speaking HTTP/1.1 (`http11`) or 1.0.
    pub fn of(method: &Method, status: StatusCode, len: Option<u64>, http11: bool) -> Self {
        let code = status.as_u16();
        if *method == Method::HEAD || (100..200).contains(&code) || code == 204 || code == 304 {
            return Self::NoBody;
        }
        match len {
            Some(n) => Self::Length(n),
            None if http11 => Self::Chunked,
            None => Self::Close,
        }
    }
}

/// The response `Connection` header asks to close.
pub fn asks_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Appends a response head to `buf`. `keep_alive`: the connection stays open afterwards;
/// `http10`: the client spoke HTTP/1.0 (which needs `Connection: keep-alive` to keep it).
pub fn encode_response_head(
    buf: &mut Vec<u8>,
    status: StatusCode,
    map: &HeaderMap,
    framing: Framing,
    keep_alive: bool,
    http10: bool,
) {
    put_status_line(buf, status);
    let keep_length = keeps_length(framing, status);
    let mut has_date = false;
    for (name, value) in map {
        if *name == header::CONNECTION
            || *name == header::TRANSFER_ENCODING
            || (*name == header::CONTENT_LENGTH && !keep_length)
        {
            continue;
        }
        has_date |= *name == header::DATE;
        put_header(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    finish_head(buf, framing, keep_alive, http10, has_date);
}

/// As [`encode_response_head`], for a backend's head kept raw: its headers go out as it
/// sent them, minus the hop-by-hop and framing ones (left out when it was read).
pub fn encode_response_head_raw(
    buf: &mut Vec<u8>,
    status: StatusCode,
    raw: &RawHead,
    framing: Framing,
    keep_alive: bool,
    http10: bool,
) {
    put_status_line(buf, status);
    buf.extend_from_slice(&raw.headers);
    if keeps_length(framing, status)
        && let Some(n) = raw.length
    {
        // Writing into a Vec cannot fail.
        let _ = write!(buf, "content-length: {n}\r\n");
    }
    finish_head(buf, framing, keep_alive, http10, raw.date);
}

fn put_status_line(buf: &mut Vec<u8>, status: StatusCode) {
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.extend_from_slice(b"\r\n");
}

/// A `Content-Length` the response carries is passed on (it describes the resource, not
/// this body): HEAD and 304, not 204.
fn keeps_length(framing: Framing, status: StatusCode) -> bool {
    framing == Framing::NoBody && status != StatusCode::NO_CONTENT
}

/// The date (unless the head has one), the framing and the connection headers, the end.
fn finish_head(
    buf: &mut Vec<u8>,
    framing: Framing,
    keep_alive: bool,
    http10: bool,
    has_date: bool,
) {
    if !has_date {
        with_date(|date| put_header(buf, b"date", date));
    }
    match framing {
        Framing::Length(n) => {
            // Writing into a Vec cannot fail.
            let _ = write!(buf, "content-length: {n}\r\n");
        }
        Framing::Chunked => put_header(buf, b"transfer-encoding", b"chunked"),
        Framing::NoBody | Framing::Close => {}
    }
    if !keep_alive {
        put_header(buf, b"connection", b"close");
    } else if http10 {
        put_header(buf, b"connection", b"keep-alive");
    }
    buf.extend_from_slice(b"\r\n");
}

/// A bare error response (the request could not be read): status, date, no body, close.
pub fn encode_refusal(buf: &mut Vec<u8>, status: StatusCode) {
    encode_response_head(
        buf,
        status,
        &HeaderMap::new(),
        Framing::Length(0),
        false,
        false,
    );
}

fn put_header(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value of the current second, rendered once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the current `Date` header value (IMF-fixdate, one-second resolution).
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn front(text: &str, limit: usize, first: bool) -> (Result<Front, HeadError>, BytesMut) {
        let mut buf = BytesMut::from(text);
        let mut scanned = 0;
        let r = find_head(&mut buf, &mut scanned, limit, first);
        (r, buf)
    }

    fn parse(text: &str) -> RequestHead {
        let mut buf = BytesMut::from(text);
        let mut scanned = 0;
        let Ok(Front::Head(n)) = find_head(&mut buf, &mut scanned, 8192, true) else {
            panic!("no head in {text:?}");
        };
        decode_request_head(&buf.split_to(n).freeze()).expect("parses")
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
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").wants_keep_alive()
        );
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
        let decode = |t: &str| decode_request_head(&Bytes::copy_from_slice(t.as_bytes()));
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
}
