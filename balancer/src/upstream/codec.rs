//! The upstream HTTP/1.1 wire format, sans I/O: the request head the balancer writes, the
//! response head it reads, how the response body is framed, and the chunked-body decoder.
//! [`super::conn`] moves these bytes; nothing here touches a socket.
//!
//! Request head (written once per request into one buffer):
//!
//! | part | bytes |
//! |---|---|
//! | request line | `METHOD SP path-and-query SP "HTTP/1.1" CRLF` |
//! | each header | `name ": " value CRLF` (names lower-case, as the map holds them) |
//! | framing | `transfer-encoding: chunked CRLF` when a body has no `Content-Length` |
//! | end | `CRLF` |
//!
//! Response head: its end (the first empty line) is found as for a request head
//! ([`crate::http1::head`]: a SIMD newline search), then the head is split off the read
//! buffer, frozen, and parsed once with `httparse` into at most [`MAX_RESPONSE_HEADERS`]
//! headers and [`MAX_RESPONSE_HEAD_BYTES`] bytes (header slots left uninitialised: zeroing
//! them cost more than the parse). Anything longer, malformed, or with an invalid name or
//! value is a [`HeadError`] (the proxy answers 502). Header values are slices of the frozen
//! head (no copy); the framing headers are noted in the same pass
//! ([`crate::http1::facts`]), so deciding the body's framing needs no map lookups. A head
//! kept for the balancer's own server ([`HeadForm::Raw`]) becomes a [`RawHead`].
//!
//! Response body framing (RFC 9112 §6.3), in order: a response to HEAD, any 1xx, 204 and 304
//! have no body (as has a 2xx answer to CONNECT); `Transfer-Encoding` ending in `chunked` is
//! chunked (a `Content-Length` beside it is ignored and the connection is not reused); any
//! other `Transfer-Encoding` runs until close; a valid `Content-Length` gives the length
//! (differing or non-numeric values are a [`HeadError`]); otherwise the body runs until close.
//!
//! Chunked body: `hex-size [; ext] CRLF data CRLF` … `0 CRLF [trailer CRLF]… CRLF`. Sizes
//! are at most 16 hex digits, extensions and trailers are skipped (bounded by
//! [`MAX_CHUNK_SKIP_BYTES`]), and trailers are not forwarded.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::http1::{HeadFacts, RawHead, find_head_end, skip_blank_lines};

/// Longest response head accepted from a backend.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Most response headers accepted from a backend (hyper's default too).
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Most bytes of chunk extensions plus trailers skipped in one chunked body.
pub const MAX_CHUNK_SKIP_BYTES: usize = 16 * 1024;

/// Why a response head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x syntax.
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// Longer than the limit without ending.
    #[error("response head longer than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A status code outside 100..=999.
    #[error("invalid status code")]
    BadStatus,
    /// A header name or value `http` does not accept.
    #[error("invalid header {0}")]
    BadHeader(String),
    /// Content-Length missing digits, or several that differ.
    #[error("invalid or conflicting Content-Length")]
    BadLength,
    /// An empty line ended the head but the parser wanted more.
    #[error("malformed response head")]
    Unterminated,
    /// 101 to a request that did not ask to switch protocols.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitch,
}

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A byte that does not belong where it is.
    #[error("malformed chunked body at {state}")]
    Malformed {
        /// Where the decoder was.
        state: &'static str,
    },
    /// A chunk size over 16 hex digits.
    #[error("chunk size too large")]
    SizeTooLarge,
    /// Extensions and trailers together over [`MAX_CHUNK_SKIP_BYTES`].
    #[error("chunk extensions or trailers over {MAX_CHUNK_SKIP_BYTES} bytes")]
    SkipTooLarge,
}

/// Serializes a request head; `add_chunked` appends `transfer-encoding: chunked` (for a
/// body of unknown length). `headers` must already be rewritten (hop-by-hop removed).
pub fn encode_request_head(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    add_chunked: bool,
) -> Bytes {
    const CHUNKED: &[u8] = b"transfer-encoding: chunked\r\n";
    let size = method.as_str().len()
        + path_and_query.len()
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + CHUNKED.len()
        + 16;
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(path_and_query.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if add_chunked {
        buf.extend_from_slice(CHUNKED);
    }
    buf.extend_from_slice(b"\r\n");
    Bytes::from(buf)
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.1 (true) or HTTP/1.0.
    pub is_http11: bool,
    /// The headers, values sharing the read buffer (empty when decoded as [`HeadForm::Raw`]).
    pub headers: HeaderMap,
    /// The head as received, when decoded as [`HeadForm::Raw`]; the balancer's own server
    /// writes the response's head from it.
    pub raw: Option<RawHead>,
    /// What the framing headers said, noted while the map was built (no lookups later).
    facts: HeadFacts,
}

/// How a response head is kept once parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadForm {
    /// As a `HeaderMap` (what hyper's server writes from).
    Map,
    /// As the bytes received, plus the few facts the proxy needs ([`RawHead`]); the
    /// balancer's own server copies the headers through from them, so no map is built.
    /// A head whose `Connection` names other headers is kept as a map anyway.
    Raw,
}

/// A hop-by-hop header or one of the framing headers, by name in any case.
fn is_framing_or_hop(name: &[u8]) -> bool {
    crate::http1::hop_by_hop::is_hop_by_hop_name(name)
        || (name.len() == 14 && name.eq_ignore_ascii_case(b"content-length"))
}

impl ResponseHead {
    /// The backend keeps the connection open after this response.
    pub fn is_keep_alive(&self) -> bool {
        !self.facts.close && (self.is_http11 || self.facts.keep_alive)
    }

    /// It carries `Retry-After`.
    pub fn has_retry_after(&self) -> bool {
        self.facts.retry_after
    }
}

/// Parses one response head from the front of `buf`. `Ok(None)` means incomplete (read
/// more); on success the head's bytes are split off `buf`, which then starts at the body.
/// `scanned` remembers how far an incomplete head was searched (start it at 0, and reset it
/// after each head), so a head arriving a byte at a time is not searched over and over.
pub fn decode_response_head(
    buf: &mut BytesMut,
    limit: usize,
    scanned: &mut usize,
) -> Result<Option<ResponseHead>, HeadError> {
    decode_response_head_as(buf, limit, scanned, HeadForm::Map)
}

/// As [`decode_response_head`], keeping the head in `form`.
pub fn decode_response_head_as(
    buf: &mut BytesMut,
    limit: usize,
    scanned: &mut usize,
    form: HeadForm,
) -> Result<Option<ResponseHead>, HeadError> {
    // Stray line ends between responses are skipped, as httparse would.
    skip_blank_lines(buf, scanned);
    let Some(end) =
        find_head_end(buf, scanned, limit).map_err(|()| HeadError::TooLarge { limit })?
    else {
        return Ok(None);
    };
    // The whole head is here: freeze it, so header values can be slices of it.
    let head = buf.split_to(end).freeze();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, &head, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(HeadError::Unterminated),
        Err(e) => return Err(HeadError::Malformed(e)),
    }
    let status = StatusCode::from_u16(resp.code.unwrap_or(0)).map_err(|_| HeadError::BadStatus)?;
    let mut facts = HeadFacts::default();
    if form == HeadForm::Raw {
        // httparse accepted every name as a token and every value's bytes, the same sets
        // `HeaderName` and `HeaderValue` accept, so nothing is converted.
        // The headers to pass on are copied as they came.
        let mut pass = Vec::with_capacity(head.len());
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            facts.note_raw(name, h.value);
            if !is_framing_or_hop(name) {
                pass.extend_from_slice(name);
                pass.extend_from_slice(b": ");
                pass.extend_from_slice(h.value);
                pass.extend_from_slice(b"\r\n");
            }
        }
        if !facts.names_headers {
            return Ok(Some(ResponseHead {
                status,
                is_http11: resp.version == Some(1),
                headers: HeaderMap::new(),
                raw: Some(RawHead {
                    headers: pass,
                    length: facts.length,
                    retry_after: facts.retry_after,
                    date: facts.date,
                }),
                facts,
            }));
        }
        facts = HeadFacts::default();
    }
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HeadError::BadHeader(h.name.to_owned()))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value))
            .map_err(|_| HeadError::BadHeader(name.as_str().to_owned()))?;
        facts.note(&name, &value);
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        is_http11: resp.version == Some(1),
        headers,
        raw: None,
        facts,
    }))
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// The framing of a response to `method` (see the module docs), and whether the
/// connection may be reused afterwards as far as framing goes. Removes a `Content-Length`
/// that a chunked coding overrides, so it is never passed on.
pub fn response_framing(
    method: &Method,
    head: &mut ResponseHead,
) -> Result<(BodyFraming, bool), HeadError> {
    let status = head.status.as_u16();
    if *method == Method::HEAD || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((BodyFraming::Empty, true));
    }
    if *method == Method::CONNECT && head.status.is_success() {
        // The connection became a tunnel the proxy does not carry: never reuse it.
        return Ok((BodyFraming::Empty, false));
    }
    let facts = head.facts;
    if facts.has_transfer_encoding {
        let had_length = facts.length.is_some() || facts.bad_length;
        if had_length {
            head.headers.remove(header::CONTENT_LENGTH);
        }
        if facts.chunked {
            return Ok((BodyFraming::Chunked, !had_length));
        }
        return Ok((BodyFraming::Close, false));
    }
    if facts.bad_length {
        return Err(HeadError::BadLength);
    }
    Ok(match facts.length {
        Some(0) => (BodyFraming::Empty, true),
        Some(n) => (BodyFraming::Length(n), true),
        None => (BodyFraming::Close, false),
    })
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a size (`digits` so far).
    Size,
    /// Spaces after the size.
    SizeSpace,
    /// Inside a chunk extension, until CR.
    Extension,
    /// Expecting LF after the size line.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after data.
    DataCr,
    /// Expecting LF after data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer line, until LF.
    TrailerLine,
    /// Expecting the final LF.
    EndLf,
    /// The body ended.
    Done,
}

impl ChunkState {
    fn name(self) -> &'static str {
        match self {
            Self::Size => "chunk size",
            Self::SizeSpace => "space after size",
            Self::Extension => "chunk extension",
            Self::SizeLf => "size line end",
            Self::Data => "chunk data",
            Self::DataCr | Self::DataLf => "chunk data end",
            Self::TrailerStart | Self::TrailerLine => "trailer",
            Self::EndLf => "final line end",
            Self::Done => "end",
        }
    }
}

/// What the front of the input holds, from [`ChunkedDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Framing bytes to skip first.
    pub skip: usize,
    /// Then this many bytes of body data.
    pub data: usize,
    /// The body ended with the skipped bytes.
    pub done: bool,
}

/// Incremental chunked-body decoder (sans I/O, any split of the input).
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    digits: u8,
    skipped: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            skipped: 0,
        }
    }

    /// The body's end has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from the front of `input`. The caller skips `skip` bytes, then takes `data`
    /// bytes as body, then calls again with what follows (`skip == 0 && data == 0 && !done`
    /// means more input is needed).
    pub fn decode(&mut self, input: &[u8]) -> Result<Chunk, ChunkError> {
        let mut i = 0;
        let malformed = |s: ChunkState| ChunkError::Malformed { state: s.name() };
        while let Some(&b) = input.get(i) {
            match self.state {
                ChunkState::Data => {
                    let avail = u64::try_from(input.len() - i).unwrap_or(u64::MAX);
                    let take = avail.min(self.size);
                    self.size -= take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    return Ok(Chunk {
                        skip: i,
                        data: usize::try_from(take).unwrap_or(0),
                        done: false,
                    });
                }
                ChunkState::Done => break,
                ChunkState::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        if self.digits >= 16 {
                            return Err(ChunkError::SizeTooLarge);
                        }
                        self.digits += 1;
                        self.size = (self.size << 4) | u64::from(d);
                    }
                    None if self.digits == 0 => return Err(malformed(self.state)),
                    None => match b {
                        b' ' | b'\t' => self.state = ChunkState::SizeSpace,
                        b';' => self.state = ChunkState::Extension,
                        b'\r' => self.state = ChunkState::SizeLf,
                        _ => return Err(malformed(self.state)),
                    },
                },
                ChunkState::SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err(malformed(self.state)),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => return Err(malformed(self.state)),
                    _ => self.count_skip()?,
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(malformed(self.state));
                    }
                    self.digits = 0;
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(malformed(self.state));
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(malformed(self.state));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    if b == b'\r' {
                        self.state = ChunkState::EndLf;
                    } else {
                        self.count_skip()?;
                        self.state = ChunkState::TrailerLine;
                    }
                }
                ChunkState::TrailerLine => {
                    self.count_skip()?;
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err(malformed(self.state));
                    }
                    self.state = ChunkState::Done;
                    return Ok(Chunk {
                        skip: i + 1,
                        data: 0,
                        done: true,
                    });
                }
            }
            i += 1;
        }
        Ok(Chunk {
            skip: i,
            data: 0,
            done: self.state == ChunkState::Done,
        })
    }

    fn count_skip(&mut self) -> Result<(), ChunkError> {
        self.skipped += 1;
        if self.skipped > MAX_CHUNK_SKIP_BYTES {
            return Err(ChunkError::SkipTooLarge);
        }
        Ok(())
    }

    /// Decodes from the front of `buf`, consuming framing: `Some(data)` is the next piece
    /// of body, `None` means more input is needed or the body ended ([`Self::is_done`]).
    pub fn next_data(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ChunkError> {
        loop {
            let step = self.decode(buf)?;
            buf.advance(step.skip);
            if step.data > 0 {
                return Ok(Some(buf.split_to(step.data).freeze()));
            }
            if step.done || step.skip == 0 {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
