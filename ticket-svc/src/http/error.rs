//! `AppError`: everything a request can fail with, and the one place errors become statuses.
//! Each error is logged here, once, where it ends.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::AccessError;
use crate::domain::{DomainError, UnixMillis};
use crate::line::LineError;
use crate::queue::QueueError;
use crate::store::StoreError;

/// Seconds a client is told to wait when the queue or store cannot take work.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not the JSON this route takes (syntax, types, missing or unknown fields).
    #[error("malformed JSON body: {0}")]
    BadJson(String),
    /// A header is malformed.
    #[error("bad header {name}: {problem}")]
    BadHeader {
        /// Which header.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The request breaks a sale rule.
    #[error("{0}")]
    Invalid(#[from] DomainError),
    /// The body is over the limit.
    #[error("body over {limit_bytes} bytes")]
    BodyTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// The body could not be read.
    #[error("could not read the body: {0}")]
    BadBody(String),
    /// No such event (or a malformed event id).
    #[error("no such event")]
    EventNotFound,
    /// No such purchase (or a malformed purchase id).
    #[error("no such purchase")]
    PurchaseNotFound,
    /// No such route.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The queue refused the job.
    #[error("the purchase queue cannot take it now: {0}")]
    QueueUnavailable(#[from] QueueError),
    /// The queue did not answer in time.
    #[error("the purchase queue did not answer within {0:?}")]
    QueueTimeout(Duration),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A readiness dependency is down.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A credential was missing or refused, or a login could not go on.
    #[error("{0}")]
    Access(#[from] AccessError),
    /// A purchase before the event's sale opens.
    #[error("the sale has not opened: it opens at {opens_at}")]
    SaleNotOpen {
        /// When it opens.
        opens_at: UnixMillis,
    },
    /// A purchase after the event's sale closed.
    #[error("the sale closed at {closes_at}")]
    SaleClosed {
        /// When it closed.
        closes_at: UnixMillis,
    },
    /// A waiting room refused the request (a token, a permit, not admitted yet).
    #[error("{0}")]
    Line(#[from] LineError),
    /// A purchase body that names its buyer: the buyer is the session's.
    #[error(
        "the buyer is the one the session names: drop `buyer` from the body and send Authorization: Bearer SESSION"
    )]
    BuyerInBody,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl AppError {
    /// The status and the machine-readable code.
    fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            Self::BadHeader { .. } => (StatusCode::BAD_REQUEST, "bad_header"),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            Self::EventNotFound => (StatusCode::NOT_FOUND, "event_not_found"),
            Self::PurchaseNotFound => (StatusCode::NOT_FOUND, "purchase_not_found"),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::QueueUnavailable(_) | Self::QueueTimeout(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable")
            }
            Self::Store(e) if e.is_transient() => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
            Self::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Self::BuyerInBody => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::SaleNotOpen { .. } => (StatusCode::FORBIDDEN, "sale_not_open"),
            Self::SaleClosed { .. } => (StatusCode::FORBIDDEN, "sale_closed"),
            Self::Line(e) => (
                match e {
                    LineError::NoWaitingRoom => StatusCode::CONFLICT,
                    LineError::TooLarge => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::FORBIDDEN,
                },
                e.as_str(),
            ),
            Self::Access(e) => match e {
                AccessError::BadEmail { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
                AccessError::Unauthenticated { .. } => {
                    (StatusCode::UNAUTHORIZED, "unauthenticated")
                }
                AccessError::BadSession(_) => (StatusCode::UNAUTHORIZED, "bad_session"),
                AccessError::BadLogin(_) => (StatusCode::UNAUTHORIZED, "bad_login"),
                AccessError::WrongCode => (StatusCode::UNAUTHORIZED, "wrong_code"),
                AccessError::TooManyAttempts => {
                    (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
                }
                AccessError::NotOrganizer => (StatusCode::FORBIDDEN, "not_organizer"),
                AccessError::OrganizerDisabled => (StatusCode::FORBIDDEN, "organizer_disabled"),
                AccessError::CodeNotSent(_) => (StatusCode::SERVICE_UNAVAILABLE, "code_not_sent"),
                AccessError::NoRandomness => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.classify();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let message = match &self {
            // Internal detail stays in the log.
            Self::Store(_) if status == StatusCode::INTERNAL_SERVER_ERROR => {
                "internal store error".to_owned()
            }
            other => other.to_string(),
        };
        let mut resp = (
            status,
            Json(ErrorBody {
                error: code,
                message,
            }),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: the scheme a 401 wants.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ticketrush\""),
            );
        }
        resp
    }
}
