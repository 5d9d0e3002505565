//! The client-facing HTTP/1.1 wire format, sans I/O: finding and parsing a request head,
//! deciding whether the balancer's own server answers it or hands the connection to hyper,
//! and writing the response head. [`super::conn`] moves the bytes.
//!
//! Request head: its end (the first empty line) is found with the same SIMD newline search
//! as a response head's ([`crate::http1::head`]); stray line ends before it are skipped
//! (RFC 9112 §2.2). The head is split off the read buffer, frozen, and parsed
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
use crate::http1::{HeadFacts, RawHead, find_head_end, skip_blank_lines};
use crate::proxy::headers as proxy_headers;

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
    /// An `Idempotency-Key` header is present (it makes the request replayable).
    idempotency_key: bool,
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
            15 if name.eq_ignore_ascii_case(b"idempotency-key") => self.idempotency_key = true,
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
            Some(head) => InBody::Encoded {
                head,
                body,
                idempotency_key: self.facts.idempotency_key,
            },
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
    // No request-target form has a fragment (RFC 9112 §3.2); `Uri` would drop it silently.
    if path.contains('#') {
        return Err(HeadError::Invalid("target"));
    }
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
        if crate::http1::hop_by_hop::is_hop_by_hop_name(name) {
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
#[path = "codec_tests.rs"]
mod tests;
