//! One client connection on the balancer's own HTTP/1.1 server: read a head, read its body
//! whole, forward it ([`crate::proxy::respond`]), write the answer, and again while the
//! connection is kept alive. Everything runs in the connection's own task: no channel
//! between a connection and its requests, no per-request header maps on the way back.
//!
//! Invariants:
//! - Every request head arrives within the header timeout, counted from the moment the
//!   server starts waiting for it: a slow head and an idle keep-alive connection both end
//!   there (hyper's rule too).
//! - A request is forwarded only with its whole body, which came within the body limit and
//!   made progress at least once per idle timeout (nginx's request buffering).
//! - A request this server does not take (see [`super::codec::RequestHead::buffered_body_len`])
//!   and an h2 preface hand the connection to hyper with every byte read so far, unread:
//!   nothing is lost or parsed twice. Requests before it were answered completely.
//! - A connection is reused only after a response that went out whole and framed, when
//!   neither side asked to close and no shutdown began.
//! - On shutdown an idle connection closes at once; a request in flight is answered with
//!   `Connection: close`. On hard stop everything ends.

use std::io;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::Rejection;
use crate::proxy::{ConnInfo, RespBody, respond};

use super::codec::{self, Forwarding, Framing, Front, HeadError};

/// Free room the read buffer keeps before a read: a typical head, and a small body, fit
/// (nginx's `client_header_buffer_size` is 1 KiB too). Longer heads grow it.
const READ_RESERVE: usize = 1024;
/// A read buffer grown past this (a long head or body) is let go once it is empty, so an
/// idle keep-alive connection keeps at most this much.
const KEEP_BUFFER: usize = 4 * READ_RESERVE;
/// The largest body read whole; longer ones stream through hyper's server.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// Response bytes gathered before a write (so a small body leaves with its head).
const WRITE_GATHER: usize = 16 * 1024;

/// How a connection left the balancer's own server.
#[derive(Debug)]
pub enum Served<I> {
    /// It is finished (closed, or to be dropped).
    Closed,
    /// hyper's server takes it from here; these bytes were read from it and come first.
    Handover(I, Bytes),
}

#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    Eof,
    Head(HeadError),
    /// No body bytes for the stall timeout.
    Stalled,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Serves HTTP/1.x requests on `io` until it closes or must go to hyper's server.
pub async fn serve<I>(mut io: I, conn: &ConnInfo) -> Served<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let shared = &conn.shared;
    let mut rbuf = BytesMut::new();
    let mut first = true;
    loop {
        let cfg = shared.config.load_full();
        let waited = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return Served::Closed,
            r = tokio::time::timeout(
                cfg.timeouts.header_read,
                read_head(&mut io, &mut rbuf, cfg.limits.max_header_bytes, first),
            ) => r,
        };
        let head_len = match waited {
            Err(_) => {
                tracing::debug!(peer = %conn.peer, "no request head within the header timeout");
                return Served::Closed;
            }
            Ok(Err(ReadError::Eof | ReadError::Stalled)) => return Served::Closed,
            Ok(Err(ReadError::Io(error))) => {
                tracing::debug!(peer = %conn.peer, %error, "client connection failed");
                return Served::Closed;
            }
            Ok(Err(ReadError::Head(error))) => {
                refuse(&mut io, conn, &error).await;
                return Served::Closed;
            }
            Ok(Ok(None)) => return Served::Handover(io, rbuf.freeze()),
            Ok(Ok(Some(n))) => n,
        };
        first = false;
        let head = rbuf.split_to(head_len).freeze();
        let fwd = Forwarding {
            client: &conn.peer_ip,
            tls: conn.is_tls,
            encode: cfg.limits.trust_forwarded.is_empty(),
        };
        let req = match codec::decode_request_head(&head, &fwd) {
            Ok(req) => req,
            Err(error) => {
                refuse(&mut io, conn, &error).await;
                return Served::Closed;
            }
        };
        let limit = cfg.limits.max_body_bytes.min(MAX_BUFFERED_BODY);
        let Some(body_len) = req.buffered_body_len(limit) else {
            let mut rest = BytesMut::with_capacity(head.len() + rbuf.len());
            rest.extend_from_slice(&head);
            rest.extend_from_slice(&rbuf);
            return Served::Handover(io, rest.freeze());
        };
        drop(head);
        if rbuf.len() < body_len {
            match read_body(&mut io, &mut rbuf, body_len, cfg.timeouts.idle).await {
                Ok(()) => {}
                Err(ReadError::Stalled) => {
                    shared.metrics.reject(Rejection::BadRequest);
                    tracing::debug!(peer = %conn.peer, "request body stalled");
                    answer_and_close(&mut io, StatusCode::REQUEST_TIMEOUT).await;
                    return Served::Closed;
                }
                Err(_) => {
                    tracing::debug!(peer = %conn.peer, "client left in the middle of a body");
                    return Served::Closed;
                }
            }
        }
        let body = rbuf.split_to(body_len).freeze();
        let keep_alive = req.wants_keep_alive();
        let http10 = req.version == Version::HTTP_10;
        let method = req.method.clone();
        let request = req.into_request(body);
        // Boxed: the exchange's future is several KiB, and inline it would size the
        // connection's task by it for as long as the connection lives, idle time too.
        let exchange = Box::pin(async {
            let resp = respond(request, conn).await;
            write_response(&mut io, resp, &method, keep_alive, http10, &shared.shutdown).await
        });
        let kept = tokio::select! {
            biased;
            _ = shared.hard_stop.cancelled() => return Served::Closed,
            r = exchange => r,
        };
        match kept {
            Ok(true) => {}
            Ok(false) => {
                close(&mut io, &cfg).await;
                return Served::Closed;
            }
            Err(error) => {
                tracing::debug!(peer = %conn.peer, %error, "response to the client failed");
                return Served::Closed;
            }
        }
        if rbuf.is_empty() && rbuf.capacity() > KEEP_BUFFER {
            rbuf = BytesMut::new();
        }
    }
}

/// Reads until a whole request head is at the front of `rbuf`: `Some(its length)`, or
/// `None` for the h2 preface.
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    rbuf: &mut BytesMut,
    limit: usize,
    first: bool,
) -> Result<Option<usize>, ReadError> {
    let mut scanned = 0;
    loop {
        if !rbuf.is_empty() {
            match codec::find_head(rbuf, &mut scanned, limit, first).map_err(ReadError::Head)? {
                Front::Head(n) => return Ok(Some(n)),
                Front::H2Preface => return Ok(None),
                Front::Incomplete => {}
            }
        }
        fill(io, rbuf).await?;
    }
}

/// Reads until `rbuf` holds `len` bytes, each read within `stall`.
async fn read_body<I: AsyncRead + Unpin>(
    io: &mut I,
    rbuf: &mut BytesMut,
    len: usize,
    stall: std::time::Duration,
) -> Result<(), ReadError> {
    if rbuf.capacity() < len {
        rbuf.reserve(len - rbuf.len());
    }
    while rbuf.len() < len {
        match tokio::time::timeout(stall, fill(io, rbuf)).await {
            Ok(r) => r?,
            Err(_) => return Err(ReadError::Stalled),
        }
    }
    Ok(())
}

async fn fill<I: AsyncRead + Unpin>(io: &mut I, rbuf: &mut BytesMut) -> Result<(), ReadError> {
    if rbuf.capacity() - rbuf.len() < READ_RESERVE / 2 {
        rbuf.reserve(READ_RESERVE);
    }
    match io.read_buf(rbuf).await? {
        0 => Err(ReadError::Eof),
        _ => Ok(()),
    }
}

/// Answers a head that could not be read (431, 400, 505) and closes, as hyper does.
async fn refuse<I: AsyncWrite + Unpin>(io: &mut I, conn: &ConnInfo, error: &HeadError) {
    let why = match error {
        HeadError::TooLarge { .. } => Rejection::HeaderTooLarge,
        _ => Rejection::BadRequest,
    };
    conn.shared.metrics.reject(why);
    tracing::debug!(peer = %conn.peer, %error, "request head refused");
    answer_and_close(io, error.status()).await;
}

async fn answer_and_close<I: AsyncWrite + Unpin>(io: &mut I, status: StatusCode) {
    let mut buf = Vec::with_capacity(128);
    codec::encode_refusal(&mut buf, status);
    if io.write_all(&buf).await.is_ok() {
        let _ = io.flush().await;
        let _ = io.shutdown().await;
    }
}

/// Ends the connection after a response: flush, then FIN (TLS: close_notify), bounded.
async fn close<I: AsyncWrite + Unpin>(io: &mut I, cfg: &crate::config::Config) {
    let _ = tokio::time::timeout(cfg.timeouts.header_read, io.shutdown()).await;
}

/// Writes `resp` for a request of `method`; `Ok(true)` when the connection may carry
/// another request.
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    resp: Response<RespBody>,
    method: &Method,
    keep_alive: bool,
    http10: bool,
    shutdown: &CancellationToken,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    let framing = Framing::of(method, parts.status, body.size_hint().exact(), !http10);
    let mut keep = keep_alive
        && framing != Framing::Close
        && !codec::asks_close(&parts.headers)
        && !shutdown.is_cancelled();
    let mut buf = Vec::with_capacity(512);
    match body.raw_head() {
        Some(raw) => {
            codec::encode_response_head_raw(&mut buf, parts.status, raw, framing, keep, http10);
        }
        None => {
            codec::encode_response_head(
                &mut buf,
                parts.status,
                &parts.headers,
                framing,
                keep,
                http10,
            );
        }
    }
    drop(parts);
    let mut sent: u64 = 0;
    let mut ended = body.is_end_stream();
    while !ended {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(error)) => {
                // What went out cannot be completed: the client sees it cut short (no
                // final chunk, or fewer bytes than the length said) when the connection ends.
                io.write_all(&buf).await?;
                return Err(io::Error::other(error));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers are not forwarded.
                Err(_) => continue,
            },
        };
        ended = body.is_end_stream();
        if framing == Framing::NoBody || data.is_empty() {
            continue;
        }
        sent = sent.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        if framing == Framing::Chunked {
            use std::io::Write as _;
            let _ = write!(buf, "{:x}\r\n", data.len());
        }
        if buf.len() + data.len() <= WRITE_GATHER {
            buf.extend_from_slice(&data);
        } else {
            io.write_all(&buf).await?;
            buf.clear();
            io.write_all(&data).await?;
        }
        if framing == Framing::Chunked {
            buf.extend_from_slice(b"\r\n");
        }
        if !ended {
            // Nothing waits in the buffer (or in TLS's) while the next piece is awaited.
            io.write_all(&buf).await?;
            io.flush().await?;
            buf.clear();
        }
    }
    if framing == Framing::Chunked {
        buf.extend_from_slice(b"0\r\n\r\n");
    }
    if let Framing::Length(n) = framing
        && sent != n
    {
        // The body did not match the length the head announced: only closing tells the
        // client.
        io.write_all(&buf).await?;
        return Err(io::Error::other(format!(
            "response body of {sent} bytes under a Content-Length of {n}"
        )));
    }
    if framing == Framing::Close {
        keep = false;
    }
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(keep)
}
