//! The API's side of [`crate::access`]: the `Buyer` and `Organizer` extractors that guard
//! routes, and the login routes (`POST /login`, `POST /sessions`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::body::{body_bytes, parse_json};
use super::error::AppError;
use super::state::ApiState;
use crate::access::{AccessError, BuyerId, unix_now};
use crate::domain::UnixMillis;
use crate::metrics::{Metrics, RefusalLabels, ResultLabels};
use crate::queue::PurchaseQueue;
use crate::store::Store;

/// The buyer a request's session names.
pub(super) struct Buyer(pub BuyerId);

/// A request that holds an organizer token.
pub(super) struct Organizer;

fn authorization(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

impl<S: Store, Q: PurchaseQueue> FromRequestParts<ApiState<S, Q>> for Buyer {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &ApiState<S, Q>,
    ) -> Result<Self, Self::Rejection> {
        st.access
            .buyer(authorization(parts), unix_now())
            .map(Buyer)
            .map_err(|e| refused(&st.metrics, "session", e))
    }
}

impl<S: Store, Q: PurchaseQueue> FromRequestParts<ApiState<S, Q>> for Organizer {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &ApiState<S, Q>,
    ) -> Result<Self, Self::Rejection> {
        st.access
            .organizer(authorization(parts))
            .map(|()| Organizer)
            .map_err(|e| refused(&st.metrics, "organizer", e))
    }
}

/// Counts a refused credential and turns it into the request's error.
fn refused(metrics: &Metrics, credential: &'static str, e: AccessError) -> AppError {
    let reason = match &e {
        AccessError::Unauthenticated { .. } => Some("missing"),
        AccessError::BadSession(t) | AccessError::BadLogin(t) => Some(t.as_str()),
        AccessError::WrongCode => Some("wrong_code"),
        AccessError::TooManyAttempts => Some("too_many_attempts"),
        AccessError::NotOrganizer => Some("not_organizer"),
        AccessError::OrganizerDisabled => Some("organizer_disabled"),
        AccessError::BadEmail { .. } | AccessError::CodeNotSent(_) | AccessError::NoRandomness => {
            None
        }
    };
    if let Some(reason) = reason {
        metrics
            .access_refused
            .get_or_create(&RefusalLabels { credential, reason })
            .inc();
    }
    AppError::Access(e)
}

/// `POST /login` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
}

/// The 202 answer to `POST /login`.
#[derive(Debug, Serialize)]
struct LoginView {
    login: String,
    expires_at: UnixMillis,
}

/// `POST /sessions` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    login: String,
    code: String,
}

/// The 201 answer to `POST /sessions`.
#[derive(Debug, Serialize)]
struct SessionView {
    session: String,
    buyer: BuyerId,
    expires_at: UnixMillis,
}

fn millis(unix_s: i64) -> UnixMillis {
    UnixMillis(unix_s.saturating_mul(1000))
}

pub(super) async fn start_login<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = body_bytes(body, st.config.max_body_bytes)?;
    let raw: LoginBody = parse_json(&body)?;
    let started = st.access.start_login(&raw.email, unix_now()).await;
    let result = if started.is_ok() {
        "code_sent"
    } else {
        "send_failed"
    };
    if !matches!(started, Err(AccessError::BadEmail { .. })) {
        st.metrics
            .logins
            .get_or_create(&ResultLabels { result })
            .inc();
    }
    let started = started?;
    Ok((
        StatusCode::ACCEPTED,
        Json(LoginView {
            login: started.challenge,
            expires_at: millis(started.expires_at),
        }),
    )
        .into_response())
}

pub(super) async fn create_session<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = body_bytes(body, st.config.max_body_bytes)?;
    let raw: SessionBody = parse_json(&body)?;
    let session = st
        .access
        .finish_login(&raw.login, &raw.code, unix_now())
        .map_err(|e| refused(&st.metrics, "login", e))?;
    st.metrics
        .logins
        .get_or_create(&ResultLabels {
            result: "session_issued",
        })
        .inc();
    Ok((
        StatusCode::CREATED,
        Json(SessionView {
            session: session.token,
            buyer: session.buyer,
            expires_at: millis(session.expires_at),
        }),
    )
        .into_response())
}
