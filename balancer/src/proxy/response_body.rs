//! The body of every answer the proxy gives a client (backend or balancer → client):
//! [`RespBody`], either a short body the balancer wrote itself or a backend's body streamed
//! frame by frame ([`UpstreamBody`], from the balancer's own HTTP/1.1 client or, for protocol
//! switches, hyper's).
//!
//! It sits above the upstream client: an upstream body carries the request's
//! [`Exchange`] guard, which gives the pooled connection back only after the body ended
//! cleanly (and the connection says it may be reused), and always releases the backend's
//! in-flight count and queue slot. A body that moves nothing for the stall timeout errors,
//! and the connection is closed instead of pooled.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::{BodyError, StallTimer};
use crate::http1::RawHead;
use crate::upstream::Exchange;
use crate::upstream::conn::ResponseBody;

/// Boxed error type of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Backend (or balancer) → client body.
// The large variant is the common one (every proxied response); boxing it would cost an
// allocation per request to save space only on the balancer's own rare answers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RespBody {
    /// A short body the balancer wrote itself.
    Full(Option<Bytes>),
    /// A backend's streamed body with its exchange guard.
    Upstream(UpstreamBody),
}

impl RespBody {
    /// A body of fixed bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        Self::Full((!b.is_empty()).then_some(b))
    }

    /// No body.
    pub fn empty() -> Self {
        Self::Full(None)
    }

    /// The backend's response head as received, when the proxy kept it raw (for the
    /// balancer's own server; see [`crate::upstream::codec::HeadForm`]).
    pub fn raw_head(&self) -> Option<&RawHead> {
        match self {
            Self::Upstream(UpstreamBody {
                body: Source::Conn(body),
                ..
            }) => body.raw_head(),
            _ => None,
        }
    }
}

/// Where an upstream response body comes from.
// The large variant is the common one; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Source {
    /// The balancer's own HTTP/1.1 client: read straight off the pooled connection.
    Conn(ResponseBody),
    /// hyper's client (protocol-upgrade requests only).
    Hyper(Incoming),
}

impl Source {
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Conn(b) => b.is_end_stream(),
            Self::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Conn(b) => b
                .exact_len()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            Self::Hyper(b) => b.size_hint(),
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Self::Conn(b) => b
                .poll_data(cx)
                .map(|o| o.map(|r| r.map(Frame::data).map_err(|e| -> BoxError { Box::new(e) }))),
            Self::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e| -> BoxError { Box::new(e) }))),
        }
    }
}

/// A backend's response body, streaming, holding the exchange until it ends.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Source,
    exchange: Option<Exchange>,
    stall: StallTimer,
}

impl UpstreamBody {
    /// Wraps `body`; `exchange` completes when the body ends.
    pub fn new(body: Source, exchange: Exchange, stall: Duration) -> Self {
        let mut this = Self {
            body,
            exchange: Some(exchange),
            stall: StallTimer::new(stall),
        };
        if this.body.is_end_stream() {
            this.finish();
        }
        this
    }

    /// The body ended cleanly: the connection goes back to the pool if it may be reused.
    fn finish(&mut self) {
        if let Some(ex) = self.exchange.take() {
            let conn = match &mut self.body {
                Source::Conn(body) => body.take_reusable(),
                Source::Hyper(_) => None,
            };
            ex.complete(conn);
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Upstream(up) => {
                let polled = up.body.poll_frame(cx);
                let frame = match polled {
                    Poll::Pending => {
                        ready!(up.stall.poll_expired(cx));
                        up.exchange = None;
                        return Poll::Ready(Some(Err(Box::new(BodyError::Stalled(
                            up.stall.timeout(),
                        )))));
                    }
                    Poll::Ready(f) => f,
                };
                match frame {
                    None => {
                        up.finish();
                        Poll::Ready(None)
                    }
                    Some(Err(e)) => {
                        // Dropping the exchange closes the connection instead of pooling it.
                        up.exchange = None;
                        Poll::Ready(Some(Err(e)))
                    }
                    Some(Ok(frame)) => {
                        up.stall.progress();
                        if up.body.is_end_stream() {
                            up.finish();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Upstream(up) => up.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(
                b.as_ref()
                    .map_or(0, |b| u64::try_from(b.len()).unwrap_or(0)),
            ),
            Self::Upstream(up) => up.body.size_hint(),
        }
    }
}
