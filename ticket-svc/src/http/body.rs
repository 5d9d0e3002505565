//! Reading a request's body: within the route's limit, as the route's JSON.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::AppError;

/// The body, or the error that says why it could not be read (over the limit: 413).
pub(super) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, AppError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::BodyTooLarge { limit_bytes: limit }
        } else {
            AppError::BadBody(rejection.body_text())
        }
    })
}

/// The body as the route's JSON (syntax, types, missing or unknown fields: 400 `bad_json`).
pub(super) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|e| AppError::BadJson(e.to_string()))
}
