//! Request bodies (client → backend) and what both directions' bodies share.
//!
//! [`InBody`] is a client's body as a server read it (streamed by hyper, or read whole by the
//! balancer's own server); [`ReqBody`] is what goes to a backend, frame by frame, never
//! buffered whole. [`StallTimer`] and [`BodyError`] serve the response side as well
//! ([`crate::proxy::response_body`], which sits above the upstream client because a response
//! body hands its connection back). Nothing here knows about backends or connections.
//!
//! Invariants:
//! - A request body never yields more than its limit: the frame that would cross it becomes an
//!   error, and the shared [`BodyFlag`] records why so the error maps to 413, not 502.
//! - A body that makes no progress for the stall timeout errors instead of holding a backend
//!   connection forever.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why a request body stopped early.
#[derive(Debug, Default)]
pub struct BodyFlag(AtomicU8);

/// Outcome recorded in a [`BodyFlag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// Nothing went wrong on the client side.
    None,
    /// The body crossed the size limit.
    TooLarge,
    /// The client's body was malformed or the client went away.
    Client,
    /// The client sent nothing for the stall timeout.
    Stalled,
}

impl BodyFlag {
    fn set(&self, fault: BodyFault) {
        let v = match fault {
            BodyFault::None => 0,
            BodyFault::TooLarge => 1,
            BodyFault::Client => 2,
            BodyFault::Stalled => 3,
        };
        self.0.store(v, Ordering::Release);
    }

    /// The recorded fault.
    pub fn fault(&self) -> BodyFault {
        match self.0.load(Ordering::Acquire) {
            1 => BodyFault::TooLarge,
            2 => BodyFault::Client,
            3 => BodyFault::Stalled,
            _ => BodyFault::None,
        }
    }
}

/// Error a body yields when it stops early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The request body is larger than allowed.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// No bytes moved for the stall timeout.
    #[error("body stalled for {0:?}")]
    Stalled(Duration),
    /// The peer's body failed.
    #[error("body read failed: {0}")]
    Read(#[from] hyper::Error),
}

/// A lazily armed deadline reset on every frame: a body that moves nothing for `timeout`
/// has stalled.
#[derive(Debug)]
pub struct StallTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    /// A timer not armed yet (it arms on the first wait).
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
        }
    }

    /// The stall timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A frame moved: the deadline starts over.
    pub fn progress(&mut self) {
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(Instant::now() + self.timeout);
        }
    }

    /// Ready when the deadline passed; arms the timer on first use.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        sleep.as_mut().poll(cx)
    }
}

/// A client's request body as it arrived.
#[derive(Debug)]
pub enum InBody {
    /// Streamed by hyper's server (HTTP/2, and HTTP/1.1 requests the balancer's own server
    /// hands over: chunked, large or `Expect: 100-continue` bodies, protocol switches).
    Hyper(Incoming),
    /// Read whole by the balancer's own HTTP/1.1 server ([`crate::downstream`]) before the
    /// request was forwarded; empty for a bodiless request. Its length matched the
    /// request's Content-Length and was within the body limit.
    Buffered(Bytes),
    /// As `Buffered`, with the head for the backend already written from the client's
    /// bytes (the request's header map is empty; see
    /// [`crate::downstream`]'s `encode_upstream_head`).
    Encoded {
        /// The head to send, rewritten as the proxy rewrites a map.
        head: Bytes,
        /// The whole body.
        body: Bytes,
        /// The head carries an `Idempotency-Key` header (noted while it was parsed: the
        /// request's header map is empty, so this is where the proxy learns it).
        idempotency_key: bool,
    },
}

impl InBody {
    /// No body (or no more of it).
    pub fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(b) => b.is_end_stream(),
            Self::Buffered(b) | Self::Encoded { body: b, .. } => b.is_empty(),
        }
    }

    /// The whole body, when a server read it into memory before the request was forwarded
    /// (so it can be sent again); `None` for a streamed body.
    pub fn held(&self) -> Option<&Bytes> {
        match self {
            Self::Hyper(_) => None,
            Self::Buffered(b) | Self::Encoded { body: b, .. } => Some(b),
        }
    }
}

/// Client → backend body.
#[derive(Debug)]
pub struct ReqBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// No (more) body.
    Empty,
    /// Streamed from hyper, limited.
    Incoming(LimitedIncoming),
    /// Read whole already.
    Buffered(Bytes),
}

#[derive(Debug)]
struct LimitedIncoming {
    body: Incoming,
    limit: u64,
    seen: u64,
    flag: Arc<BodyFlag>,
    stall: StallTimer,
}

impl ReqBody {
    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Empty,
        }
    }

    /// A body read whole already (see [`InBody::Buffered`]).
    pub fn buffered(body: Bytes) -> Self {
        Self {
            inner: if body.is_empty() {
                Inner::Empty
            } else {
                Inner::Buffered(body)
            },
        }
    }

    /// The client's body, limited to `limit` bytes and `stall` without progress.
    pub fn limited(body: Incoming, limit: u64, stall: Duration, flag: Arc<BodyFlag>) -> Self {
        Self {
            inner: Inner::Incoming(LimitedIncoming {
                body,
                limit,
                seen: 0,
                flag,
                stall: StallTimer::new(stall),
            }),
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let inner = match &mut this.inner {
            Inner::Empty => return Poll::Ready(None),
            Inner::Buffered(_) => {
                let Inner::Buffered(data) = std::mem::replace(&mut this.inner, Inner::Empty) else {
                    return Poll::Ready(None);
                };
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Inner::Incoming(inner) => inner,
        };
        match Pin::new(&mut inner.body).poll_frame(cx) {
            Poll::Pending => {
                if inner.stall.poll_expired(cx).is_ready() {
                    inner.flag.set(BodyFault::Stalled);
                    return Poll::Ready(Some(Err(BodyError::Stalled(inner.stall.timeout))));
                }
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                inner.flag.set(BodyFault::Client);
                Poll::Ready(Some(Err(BodyError::Read(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                inner.stall.progress();
                if let Some(data) = frame.data_ref() {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    inner.seen = inner.seen.saturating_add(len);
                    if inner.seen > inner.limit {
                        inner.flag.set(BodyFault::TooLarge);
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit: inner.limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Buffered(_) => false,
            Inner::Incoming(i) => i.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Buffered(b) => SizeHint::with_exact(u64::try_from(b.len()).unwrap_or(0)),
            Inner::Incoming(i) => i.body.size_hint(),
        }
    }
}
