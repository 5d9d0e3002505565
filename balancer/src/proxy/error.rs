//! Every way a proxied request can fail, with its side and whether another backend may be
//! tried — and the one place those facts become a status code.
//!
//! | error | side | retry elsewhere | status |
//! |---|---|---|---|
//! | bad framing, malformed client body | downstream | no | 400 |
//! | body over the limit | downstream | no | 413 |
//! | client body stalled | downstream | no | 408 |
//! | over the client's rate | downstream | no | 429 + Retry-After |
//! | no backend available | internal | no | 503 |
//! | queue full / queue timeout | upstream | no | 503 + Retry-After |
//! | connect refused / timed out, request not written | upstream | yes | 502 / 504 |
//! | exchange broke after the request was written | upstream | no | 502 |
//! | no response headers in time | upstream | no | 504 |
//! | whole-request deadline | internal | no | 504 |

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::BodyFault;
use crate::metrics::Rejection;
use crate::upstream::conn::ConnError;

use super::headers::FramingError;
use super::response_body::RespBody;

/// Which side of the proxy a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Downstream,
    /// A backend.
    Upstream,
    /// The balancer itself.
    Internal,
}

/// A failed proxied request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Ambiguous or malformed framing.
    #[error("bad request framing: {0}")]
    Framing(#[from] FramingError),
    /// Malformed request (URI, headers).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Declared or streamed body over the limit.
    #[error("request body over {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client's body failed or stalled while being forwarded.
    #[error("client body failed ({fault:?}) while sending to {backend}")]
    ClientBody {
        /// What went wrong.
        fault: BodyFault,
        /// The backend it was going to.
        backend: SocketAddr,
    },
    /// Client over its rate.
    #[error("rate limited")]
    RateLimited {
        /// Time until the next token.
        retry_after: Duration,
    },
    /// Nothing to send to.
    #[error("no backend available")]
    NoBackend,
    /// The backend's wait queue is full.
    #[error("wait queue of {backend} is full")]
    QueueFull {
        /// The backend.
        backend: SocketAddr,
    },
    /// Waited too long in the queue.
    #[error("timed out in the wait queue of {backend}")]
    QueueTimeout {
        /// The backend.
        backend: SocketAddr,
    },
    /// TCP connect failed.
    #[error("connect to {backend} failed: {source}")]
    Connect {
        /// The backend.
        backend: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TCP connect timed out.
    #[error("connect to {backend} timed out")]
    ConnectTimeout {
        /// The backend.
        backend: SocketAddr,
    },
    /// The HTTP exchange failed; `sent` says whether the request may have reached it.
    #[error("exchange with {backend} failed (request sent: {sent}): {source}")]
    Exchange {
        /// The backend.
        backend: SocketAddr,
        /// The request was (maybe partly) written.
        sent: bool,
        /// What failed on the connection.
        source: ConnError,
    },
    /// No response headers within the upstream timeout.
    #[error("{backend} sent no response headers within {timeout:?}")]
    UpstreamTimeout {
        /// The backend.
        backend: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The whole-request deadline passed.
    #[error("request took longer than {0:?}")]
    Deadline(Duration),
}

impl ProxyError {
    /// Whose fault it is.
    pub fn side(&self) -> Side {
        match self {
            Self::Framing(_)
            | Self::BadRequest(_)
            | Self::BodyTooLarge { .. }
            | Self::ClientBody { .. }
            | Self::RateLimited { .. } => Side::Downstream,
            Self::NoBackend | Self::Deadline(_) => Side::Internal,
            Self::QueueFull { .. }
            | Self::QueueTimeout { .. }
            | Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Exchange { .. }
            | Self::UpstreamTimeout { .. } => Side::Upstream,
        }
    }

    /// The request never reached the backend, so another backend may take it.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::ConnectTimeout { .. } => true,
            Self::Exchange { sent, .. } => !sent,
            _ => false,
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Framing(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientBody { fault, .. } => match fault {
                BodyFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                BodyFault::Stalled => StatusCode::REQUEST_TIMEOUT,
                BodyFault::Client | BodyFault::None => StatusCode::BAD_REQUEST,
            },
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NoBackend | Self::QueueFull { .. } | Self::QueueTimeout { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Connect { .. } | Self::Exchange { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. } | Self::UpstreamTimeout { .. } | Self::Deadline(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// The metrics reason.
    pub fn rejection(&self) -> Rejection {
        match self {
            Self::Framing(_) | Self::BadRequest(_) => Rejection::BadRequest,
            Self::BodyTooLarge { .. } => Rejection::TooLarge,
            Self::ClientBody { fault, .. } => match fault {
                BodyFault::TooLarge => Rejection::TooLarge,
                _ => Rejection::BadRequest,
            },
            Self::RateLimited { .. } => Rejection::RateLimited,
            Self::NoBackend => Rejection::NoBackend,
            Self::QueueFull { .. } => Rejection::QueueFull,
            Self::QueueTimeout { .. } => Rejection::QueueTimeout,
            Self::Deadline(_) => Rejection::Timeout,
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Exchange { .. }
            | Self::UpstreamTimeout { .. } => Rejection::UpstreamError,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            Self::QueueFull { .. } | Self::QueueTimeout { .. } | Self::NoBackend => Some(1),
            _ => None,
        }
    }

    fn body_text(&self) -> &'static str {
        match self {
            Self::Framing(_) | Self::BadRequest(_) | Self::ClientBody { .. } => {
                "bad request: ambiguous or malformed message\n"
            }
            Self::BodyTooLarge { .. } => "request body too large\n",
            Self::RateLimited { .. } => "too many requests from this client, slow down\n",
            Self::NoBackend => "no backend available: all backends are down\n",
            Self::QueueFull { .. } => "service busy: the waiting line is full, retry shortly\n",
            Self::QueueTimeout { .. } => "service busy: waited too long in line, retry shortly\n",
            Self::Connect { .. } | Self::Exchange { .. } => "bad gateway: the backend failed\n",
            Self::ConnectTimeout { .. } | Self::UpstreamTimeout { .. } | Self::Deadline(_) => {
                "gateway timeout: the backend did not answer in time\n"
            }
        }
    }

    /// The response the client gets (the only error → status mapping in the crate).
    pub fn to_response(&self) -> Response<RespBody> {
        let mut resp = Response::new(RespBody::full(self.body_text()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(secs) = self.retry_after_secs() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if matches!(self.side(), Side::Downstream) && self.status() != StatusCode::TOO_MANY_REQUESTS
        {
            // After a framing or body error the connection's byte stream cannot be trusted.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_after() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let r = ProxyError::RateLimited {
            retry_after: Duration::from_millis(200),
        }
        .to_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ProxyError::QueueFull { backend: addr }.to_response();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(ProxyError::NoBackend.status(), 503);
        assert!(
            ProxyError::ConnectTimeout { backend: addr }.is_retryable()
                && !ProxyError::UpstreamTimeout {
                    backend: addr,
                    timeout: Duration::from_secs(1)
                }
                .is_retryable()
        );
    }
}
