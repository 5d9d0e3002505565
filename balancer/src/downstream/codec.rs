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

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::body::InBody;
use crate::proxy::headers as proxy_headers;
use crate::upstream::codec::{HeadFacts, RawHead, find_head_end, skip_blank_lines};

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
    skip_blank_lines(buf, scanned);
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
    match find_head_end(buf, scanned, limit) {
        Ok(Some(end)) => Ok(Front::Head(end)),
        Ok(None) => Ok(Front::Incomplete),
        Err(()) => Err(HeadError::TooLarge { limit }),
    }
}

/// What the proxy adds to a request on its way to a backend, and whether the head may be
/// written for the backend straight from the client's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client's address, for `X-Forwarded-For`.
    pub client: &'a HeaderValue,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// Write the backend's head from the client's bytes when the request allows it (no
    /// trusted proxies are configured: the rate limiter keys on the peer alone, so no
    /// header needs to be looked up later).
    pub encode: bool,
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
    /// The headers, values sharing the frozen head (empty when `encoded` is set).
    pub headers: HeaderMap,
    /// The head for the backend, rewritten as the proxy rewrites a map (see
    /// [`encode_upstream_head`]), when it could be made without one.
    encoded: Option<Bytes>,
    /// What the headers said.
    facts: RequestFacts,
}

/// What a request's headers said, gathered in one pass.
#[derive(Debug, Clone, Copy, Default)]
struct RequestFacts {
    framing: HeadFacts,
    expect: bool,
    upgrade: bool,
    hosts: u8,
    request_ids: u8,
    /// Every `X-Forwarded-For` value is visible ASCII (the map path drops others).
    forwarded_for_plain: bool,
}

impl RequestFacts {
    fn note(&mut self, name: &[u8], value: &[u8]) {
        self.framing.note_raw(name, value);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => self.hosts = self.hosts.saturating_add(1),
            6 if name.eq_ignore_ascii_case(b"expect") => self.expect = true,
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade = true,
            12 if name.eq_ignore_ascii_case(b"x-request-id") => {
                self.request_ids = self.request_ids.saturating_add(1);
            }
            15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => {
                self.forwarded_for_plain &= value.iter().all(|b| (0x20..0x7f).contains(b));
            }
            _ => {}
        }
    }

    /// The head can be rewritten from bytes with the same result as through a map: one
    /// Host, at most one request id, nothing named in `Connection`, plain forwarding chains.
    fn encodable(&self) -> bool {
        self.hosts == 1
            && self.request_ids <= 1
            && !self.framing.names_headers
            && self.forwarded_for_plain
    }
}

impl RequestHead {
    /// The client keeps the connection open after this exchange (RFC 9112 §9.3).
    pub fn wants_keep_alive(&self) -> bool {
        let f = &self.facts.framing;
        !f.close && (self.version == Version::HTTP_11 || f.keep_alive)
    }

    /// The body's length when the balancer's own server can take this request: no body or
    /// a valid Content-Length of at most `max_body` bytes; no Transfer-Encoding, no `Expect`,
    /// no protocol switch and not CONNECT. `None`: hyper's server takes the connection from
    /// here (it streams chunked and large bodies, answers `100 Continue`, switches
    /// protocols, and refuses what the contract refuses, through the same proxy code).
    pub fn buffered_body_len(&self, max_body: u64) -> Option<usize> {
        let f = &self.facts;
        if f.framing.has_transfer_encoding
            || f.framing.bad_length
            || f.expect
            || f.upgrade
            || self.method == Method::CONNECT
        {
            return None;
        }
        let len = f.framing.length.unwrap_or(0);
        if len > max_body {
            return None;
        }
        usize::try_from(len).ok()
    }

    /// The request to forward, with its whole body.
    pub fn into_request(self, body: Bytes) -> Request<InBody> {
        let inbound = match self.encoded {
            Some(head) => InBody::Encoded { head, body },
            None => InBody::Buffered(body),
        };
        let mut req = Request::new(inbound);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Parses the request head `head` (exactly one head, as [`find_head`] measured it), and
/// when `fwd` allows and the head qualifies, writes the backend's head from it right away.
pub fn decode_request_head(head: &Bytes, fwd: &Forwarding<'_>) -> Result<RequestHead, HeadError> {
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
    let mut facts = RequestFacts {
        forwarded_for_plain: true,
        ..RequestFacts::default()
    };
    for h in req.headers.iter() {
        facts.note(h.name.as_bytes(), h.value);
    }
    if fwd.encode && path.starts_with('/') && facts.encodable() {
        // httparse accepted every name as a token and every value's bytes: the same sets
        // `HeaderName` and `HeaderValue` accept, so a map would have taken them too.
        let encoded = encode_upstream_head(&method, path, req.headers, fwd);
        return Ok(RequestHead {
            method,
            uri,
            version,
            headers: HeaderMap::new(),
            encoded: Some(encoded),
            facts,
        });
    }
    // Room for the four headers the proxy adds (X-Forwarded-For, -Proto, -Host, X-Request-Id):
    // a map that has to grow for them rehashes everything (~2k instructions per request).
    let mut headers = HeaderMap::with_capacity(req.headers.len() + FORWARDING_HEADERS);
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Invalid("header"))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value))
            .map_err(|_| HeadError::Invalid("header value"))?;
        headers.append(name, value);
    }
    Ok(RequestHead {
        method,
        uri,
        version,
        headers,
        encoded: None,
        facts,
    })
}

/// The head a backend gets for a request whose head qualified ([`RequestFacts::encodable`]),
/// written from the client's bytes with the rewriting the proxy applies to a map
/// ([`crate::proxy::forward`]): origin-form target, HTTP/1.1, hop-by-hop headers dropped,
/// `X-Forwarded-For` extended with the client (one header), `X-Forwarded-Proto` and
/// `X-Forwarded-Host` set, a sane `X-Request-Id` kept or a fresh one added. Other headers
/// keep the client's spelling and order.
fn encode_upstream_head(
    method: &Method,
    target: &str,
    headers: &[httparse::Header<'_>],
    fwd: &Forwarding<'_>,
) -> Bytes {
    let size = method.as_str().len()
        + target.len()
        + headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 4)
            .sum::<usize>()
        + 200;
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host: &[u8] = b"";
    let mut chain: Vec<&[u8]> = Vec::new();
    let mut has_id = false;
    for h in headers {
        let name = h.name.as_bytes();
        if proxy_headers::is_hop_by_hop_name(name) {
            continue;
        }
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => host = h.value,
            12 if name.eq_ignore_ascii_case(b"x-request-id") => {
                if !proxy_headers::is_sane_request_id(h.value) {
                    continue;
                }
                has_id = true;
            }
            15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => {
                chain.push(h.value);
                continue;
            }
            16 if name.eq_ignore_ascii_case(b"x-forwarded-host") => continue,
            17 if name.eq_ignore_ascii_case(b"x-forwarded-proto") => continue,
            _ => {}
        }
        put_header(&mut buf, name, h.value);
    }
    buf.extend_from_slice(b"x-forwarded-for: ");
    // As the map path joins them: every value, ", " between, then the client.
    let mut first = true;
    for link in &chain {
        if !first {
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(link);
        first = false;
    }
    if chain.iter().any(|l| !l.is_empty()) || chain.len() > 1 {
        buf.extend_from_slice(b", ");
    }
    buf.extend_from_slice(fwd.client.as_bytes());
    buf.extend_from_slice(b"\r\n");
    put_header(
        &mut buf,
        b"x-forwarded-proto",
        if fwd.tls { b"https" } else { b"http" },
    );
    put_header(&mut buf, b"x-forwarded-host", host);
    if !has_id {
        put_header(
            &mut buf,
            b"x-request-id",
            proxy_headers::new_request_id().as_bytes(),
        );
    }
    buf.extend_from_slice(b"\r\n");
    Bytes::from(buf)
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

    /// The upstream head's request line and headers, names lower-cased, in order.
    fn upstream_view(head: &[u8]) -> (String, Vec<(String, String)>) {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(head).unwrap().is_complete(), "{head:?}");
        let line = format!(
            "{} {} 1.{}",
            req.method.unwrap(),
            req.path.unwrap(),
            req.version.unwrap()
        );
        let headers = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        (line, headers)
    }

    /// What the map path sends for `text` (the proxy's rewriting, then its encoder).
    fn via_map(text: &str) -> Option<(String, Vec<(String, String)>)> {
        let head = parse_with(text, false);
        let (mut parts, _) = head.into_request(Bytes::new()).into_parts();
        crate::proxy::forward::rewrite_parts(&mut parts, &client(), false, false).ok()?;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let bytes =
            crate::upstream::codec::encode_request_head(&parts.method, path, &parts.headers, false);
        Some(upstream_view(&bytes))
    }

    fn via_bytes(text: &str) -> Option<(String, Vec<(String, String)>)> {
        let head = parse_with(text, true);
        assert!(head.encoded.is_none() || head.headers.is_empty());
        head.encoded.as_deref().map(upstream_view)
    }

    /// Sorted by name (stable: same-name headers keep their order), a fresh request id
    /// replaced by a marker (each path makes its own).
    fn normalized(
        view: (String, Vec<(String, String)>),
        client_id: Option<&str>,
    ) -> (String, Vec<(String, String)>) {
        let (line, mut headers) = view;
        for (k, v) in &mut headers {
            if k == "x-request-id" && Some(v.as_str()) != client_id {
                assert_eq!(v.len(), 32, "a fresh id: {v}");
                *v = "<fresh>".into();
            }
        }
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        (line, headers)
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
        let (line, headers) = upstream_view(head.encoded.as_deref().unwrap());
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
}
