//! One upstream HTTP/1.1 connection, driven by the request's own task: no connection task,
//! no channel. [`Call`] writes a request ([`Upload`]: the head serialized once, then the
//! body) and reads the response head; [`ResponseBody`] then streams the body straight off
//! the socket and hands the [`Connection`] back for pooling only when it ended cleanly.
//!
//! Invariants:
//! - Full duplex in one task: while the response head or body is read, the rest of the
//!   request body keeps being sent (a backend may answer — or echo — before it has read
//!   everything), so neither side waits on the other.
//! - [`Upload::is_written`] is false until the socket accepted a byte of the request: until
//!   then the request (head, any body bytes already taken from the client, and the rest of
//!   the body) can move to another connection or backend as it is.
//! - A connection is reusable only when the response was complete and cleanly framed, the
//!   backend did not say `Connection: close`, the whole request was sent, and no byte beyond
//!   the response was received. Anything else drops (closes) it.
//! - The read buffer holds at most one response head ([`codec::MAX_RESPONSE_HEAD_BYTES`])
//!   plus one read; the write buffer at most one body frame and its chunk framing. An idle
//!   pooled connection keeps only a head-sized read buffer.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::Method;
use http_body::Body as _;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::body::{BodyError, ReqBody};
use crate::http1::RawHead;

use super::codec::{
    self, BodyFraming, ChunkError, ChunkedDecoder, HeadError, HeadForm, ResponseHead,
};

/// Bytes the read buffer keeps free before a read.
const READ_RESERVE: usize = 8 * 1024;
/// Read reserve while streaming a long body.
const BODY_READ_RESERVE: usize = 64 * 1024;
/// Body bytes gathered before they are written (so small bodies leave with the head).
const WRITE_GATHER: usize = 16 * 1024;

/// What went wrong on an upstream connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before a complete response head.
    #[error("connection closed before a response")]
    Closed,
    /// The response head was refused.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The chunked response body was malformed.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The backend closed the connection in the middle of a body.
    #[error("connection closed in the middle of the response body")]
    Truncated,
    /// The client's request body failed (the body's flag says why).
    #[error("request body: {0}")]
    RequestBody(BodyError),
    /// The request body did not match its Content-Length.
    #[error("request body length differs from its Content-Length")]
    RequestLength,
    /// The hyper client (protocol upgrades only) failed.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

impl ConnError {
    /// The connection was lost (reset, closed): the backend may not have seen the request,
    /// or a keep-alive race closed it as the request went out.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::Io(_) | Self::Closed)
    }
}

/// An open upstream connection and its read buffer.
#[derive(Debug)]
pub struct Connection {
    io: TcpStream,
    rbuf: BytesMut,
    /// The read buffer was grown past the head-sized reserve (a long body was streamed).
    grown: bool,
}

impl Connection {
    /// Wraps a connected stream.
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            rbuf: BytesMut::new(),
            grown: false,
        }
    }

    /// The backend closed it (or sent bytes nobody asked for) while it sat idle. Costs no
    /// system call unless the socket became readable: the reactor's readiness is checked
    /// first, and only then a one-byte read tells EOF from a stale wake-up.
    pub fn is_closed(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                !matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Lets go of a read buffer grown for a long body before the connection idles: the
    /// buffer's whole allocation would otherwise stay with it (the body's frames were views
    /// of it). A head-sized buffer is kept for the next response.
    fn trim(&mut self) {
        if self.grown {
            self.rbuf = BytesMut::new();
            self.grown = false;
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, reserve: usize) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < reserve / 2 {
            self.rbuf.reserve(reserve);
            self.grown |= reserve > READ_RESERVE;
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFraming {
    /// Exactly this many bytes (the client's Content-Length; 0 with no body).
    Length(u64),
    /// Chunked transfer coding (the head says so).
    Chunked,
}

/// A request on its way out: the serialized head, then the body.
#[derive(Debug)]
pub struct Upload {
    head: Bytes,
    head_sent: usize,
    buf: Vec<u8>,
    buf_sent: usize,
    body: Option<ReqBody>,
    framing: UploadFraming,
    body_done: bool,
    written: bool,
    bodiless: bool,
}

impl Upload {
    /// A request with head `head` (from [`codec::encode_request_head`]) and `body`.
    pub fn new(head: Bytes, body: Option<ReqBody>, framing: UploadFraming) -> Self {
        Self {
            head,
            head_sent: 0,
            buf: Vec::new(),
            buf_sent: 0,
            body_done: body.is_none(),
            bodiless: body.is_none(),
            body,
            framing,
            written: false,
        }
    }

    /// Some byte of the request reached the socket.
    pub fn is_written(&self) -> bool {
        self.written
    }

    /// Makes a bodiless request sendable again from its start (a replay); false (and
    /// unchanged) when it carries a body, which cannot be read twice.
    pub fn restart(&mut self) -> bool {
        if !self.bodiless {
            return false;
        }
        self.head_sent = 0;
        self.written = false;
        true
    }

    /// Everything was written.
    pub fn is_done(&self) -> bool {
        self.body_done && self.head_sent >= self.head.len() && self.buf_sent >= self.buf.len()
    }

    fn queue(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            UploadFraming::Length(remaining) => {
                let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                *remaining = remaining.checked_sub(len).ok_or(ConnError::RequestLength)?;
                self.buf.extend_from_slice(data);
            }
            UploadFraming::Chunked => {
                self.buf
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.buf.extend_from_slice(data);
                self.buf.extend_from_slice(b"\r\n");
            }
        }
        Ok(())
    }

    fn finish_body(&mut self) -> Result<(), ConnError> {
        self.body = None;
        self.body_done = true;
        match self.framing {
            UploadFraming::Length(0) => Ok(()),
            UploadFraming::Length(_) => Err(ConnError::RequestLength),
            UploadFraming::Chunked => {
                self.buf.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
        }
    }

    /// Moves the request forward: takes body frames that are ready (gathering small ones
    /// with the head so they leave in one write) and writes. Ready when all is written.
    fn poll_send(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ConnError>> {
        loop {
            if !self.body_done && self.buf.len() - self.buf_sent < WRITE_GATHER {
                let polled = match self.body.as_mut() {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                };
                match polled {
                    Poll::Ready(None) => {
                        self.finish_body()?;
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(ConnError::RequestBody(e)));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            self.queue(data)?;
                        }
                        if self.body.as_ref().is_none_or(|b| b.is_end_stream()) {
                            self.finish_body()?;
                        }
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            let head = self.head.get(self.head_sent..).unwrap_or_default();
            let buf = self.buf.get(self.buf_sent..).unwrap_or_default();
            if head.is_empty() && buf.is_empty() {
                return if self.body_done {
                    Poll::Ready(Ok(()))
                } else {
                    // The body is pending and nothing is left to write: its waker is set.
                    Poll::Pending
                };
            }
            let n = if buf.is_empty() {
                ready!(Pin::new(&mut *io).poll_write(cx, head))?
            } else if head.is_empty() {
                ready!(Pin::new(&mut *io).poll_write(cx, buf))?
            } else {
                let slices = [IoSlice::new(head), IoSlice::new(buf)];
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.written = true;
            let from_head = n.min(head.len());
            self.head_sent += from_head;
            self.buf_sent += n - from_head;
            if self.buf_sent >= self.buf.len() {
                self.buf.clear();
                self.buf_sent = 0;
            }
        }
    }
}

/// A request in flight on a connection, until its response head arrives.
#[derive(Debug)]
pub struct Call {
    conn: Connection,
    upload: Upload,
    /// How the response head is kept.
    form: HeadForm,
    /// Writing the request failed after some of it went out; the backend may still have
    /// answered (say, 413 before reading a large body), so the head is read first.
    write_error: Option<ConnError>,
    /// How far an incomplete response head has been searched for its end.
    scanned: usize,
}

impl Call {
    /// Starts sending `upload` on `conn` (nothing happens until polled); the response head
    /// will be kept in `form`.
    pub fn new(conn: Connection, upload: Upload, form: HeadForm) -> Self {
        Self {
            conn,
            upload,
            form,
            write_error: None,
            scanned: 0,
        }
    }

    /// The request, to retry elsewhere (see [`Upload::is_written`]); the connection is
    /// dropped.
    pub fn into_upload(self) -> Upload {
        self.upload
    }

    /// Sends the request and reads the response head, skipping 1xx interim responses.
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<ResponseHead, ConnError>> {
        loop {
            if self.write_error.is_none() && !self.upload.is_done() {
                // Pending here just means the body or the socket is not ready; reading goes on.
                if let Poll::Ready(Err(e)) = self.upload.poll_send(&mut self.conn.io, cx) {
                    if !(self.upload.is_written() && matches!(e, ConnError::Io(_))) {
                        return Poll::Ready(Err(e));
                    }
                    self.write_error = Some(e);
                }
            }
            if !self.conn.rbuf.is_empty()
                && let Some(head) = codec::decode_response_head_as(
                    &mut self.conn.rbuf,
                    codec::MAX_RESPONSE_HEAD_BYTES,
                    &mut self.scanned,
                    self.form,
                )?
            {
                match head.status.as_u16() {
                    101 => return Poll::Ready(Err(HeadError::UnexpectedSwitch.into())),
                    100..=199 => continue,
                    _ => return Poll::Ready(Ok(head)),
                }
            }
            match ready!(self.conn.poll_fill(cx, READ_RESERVE)) {
                Ok(0) => {
                    return Poll::Ready(Err(self.write_error.take().unwrap_or(ConnError::Closed)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(self.write_error.take().unwrap_or(e.into()))),
            }
        }
    }

    /// The response head arrived: its body, framed for a request of `method`. Errors (bad
    /// Content-Length) leave the connection dropped.
    pub fn into_body(
        self,
        method: &Method,
        head: &mut ResponseHead,
    ) -> Result<ResponseBody, HeadError> {
        let (framing, reusable) = codec::response_framing(method, head)?;
        let failed = self.write_error.is_some();
        let mut body = ResponseBody {
            raw_head: head.raw.take(),
            keep_alive: reusable && head.is_keep_alive() && !failed,
            conn: Some(self.conn),
            // A request that could not be written in full is abandoned (the connection
            // will not be reused); the rest is sent alongside the response body.
            upload: (!failed && !self.upload.is_done()).then(|| Box::new(self.upload)),
            state: State::Empty,
        };
        body.state = match framing {
            BodyFraming::Empty => State::Empty,
            BodyFraming::Length(n) => {
                let buffered = body.conn.as_ref().map_or(0, |c| c.rbuf.len());
                match usize::try_from(n) {
                    // The whole body is here already (the usual small response): one frame.
                    Ok(len) if len <= buffered => {
                        State::Whole(body.conn.as_mut().map(|c| c.rbuf.split_to(len).freeze()))
                    }
                    _ => State::Length(n),
                }
            }
            BodyFraming::Chunked => State::Chunked(ChunkedDecoder::new()),
            BodyFraming::Close => State::Close,
        };
        Ok(body)
    }
}

#[derive(Debug)]
enum State {
    /// No (more) body.
    Empty,
    /// The whole body, already read.
    Whole(Option<Bytes>),
    /// This many bytes still to come.
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
    /// Until the backend closes.
    Close,
    /// Ended cleanly.
    Done,
}

/// A response body streamed off its connection.
#[derive(Debug)]
pub struct ResponseBody {
    /// The response's head as received ([`HeadForm::Raw`]), for the server that writes it.
    raw_head: Option<RawHead>,
    conn: Option<Connection>,
    /// The rest of the request, when its head arrived first (rare: boxed).
    upload: Option<Box<Upload>>,
    state: State,
    keep_alive: bool,
}

impl ResponseBody {
    /// The response's head as received, when it was kept raw.
    pub fn raw_head(&self) -> Option<&RawHead> {
        self.raw_head.as_ref()
    }

    /// The body has ended (or there is none).
    pub fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Empty | State::Done | State::Whole(None))
    }

    /// Bytes still to come, when known.
    pub fn exact_len(&self) -> Option<u64> {
        match &self.state {
            State::Empty | State::Done | State::Whole(None) => Some(0),
            State::Whole(Some(b)) => u64::try_from(b.len()).ok(),
            State::Length(n) => Some(*n),
            State::Chunked(_) | State::Close => None,
        }
    }

    /// After a clean end: the connection, if it may carry another request.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        let reusable = self.keep_alive
            && self.is_end_stream()
            && self.upload.as_ref().is_none_or(|u| u.is_done())
            && self.conn.as_ref().is_some_and(|c| c.rbuf.is_empty());
        let mut conn = self.conn.take().filter(|_| reusable)?;
        conn.trim();
        Some(conn)
    }

    /// The next piece of the body; `None` at its clean end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ConnError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            if let Some(up) = self.upload.as_mut()
                && !up.is_done()
                && let Poll::Ready(Err(e)) = up.poll_send(&mut conn.io, cx)
            {
                self.keep_alive = false;
                return Poll::Ready(Some(Err(e)));
            }
            let reserve = match &mut self.state {
                State::Empty | State::Done => return Poll::Ready(None),
                State::Whole(b) => {
                    let data = b.take();
                    return Poll::Ready(data.map(Ok));
                }
                State::Length(remaining) => {
                    if !conn.rbuf.is_empty() {
                        let avail = u64::try_from(conn.rbuf.len()).unwrap_or(u64::MAX);
                        let take = avail.min(*remaining);
                        *remaining -= take;
                        let data = conn
                            .rbuf
                            .split_to(usize::try_from(take).unwrap_or(0))
                            .freeze();
                        if *remaining == 0 {
                            self.state = State::Done;
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                    usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .clamp(READ_RESERVE, BODY_READ_RESERVE)
                }
                State::Chunked(dec) => {
                    match dec.next_data(&mut conn.rbuf) {
                        Ok(Some(data)) => return Poll::Ready(Some(Ok(data))),
                        Ok(None) if dec.is_done() => {
                            self.state = State::Done;
                            return Poll::Ready(None);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            self.keep_alive = false;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                    BODY_READ_RESERVE
                }
                State::Close => {
                    if !conn.rbuf.is_empty() {
                        return Poll::Ready(Some(Ok(conn.rbuf.split().freeze())));
                    }
                    BODY_READ_RESERVE
                }
            };
            match ready!(conn.poll_fill(cx, reserve)) {
                Ok(0) if matches!(self.state, State::Close) => {
                    self.state = State::Done;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(ConnError::Truncated)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.keep_alive = false;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}
