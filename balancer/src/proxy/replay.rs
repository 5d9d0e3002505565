//! Which requests may be sent again after a backend received them, and how they are rebuilt.
//!
//! A request that reached a backend which then failed it (the connection died before an
//! answer, or, with `--retry-on-5xx`, a 502/503) may have had its effect there already. It
//! goes to another backend only when a second delivery is safe:
//! - a bodiless request of an idempotent method (RFC 9110 §9.2.2), under `--retry-on-5xx`;
//! - a request of any method carrying an `Idempotency-Key` header (the IETF httpapi
//!   Idempotency-Key draft), under `--replay-idempotency-key`: the backend answers a repeated
//!   key as it answered the first request (the ticket API derives the purchase id from the
//!   key, and the broker drops the duplicate).
//!
//! Invariants:
//! - A replay is the same request: the head as it was serialized once and the same body
//!   bytes, so every backend tried sees identical bytes.
//! - Only a body the balancer holds whole (read by its own HTTP/1.1 server) can be sent twice;
//!   a streamed body was consumed by the first attempt, and such a request is never replayed.
//! - Keeping a replay costs reference counts, not copies; a request that qualifies for none
//!   keeps nothing, and its `Idempotency-Key` is looked up only when keyed replays are on and
//!   its body is held.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};

use crate::body::ReqBody;
use crate::config::RetryConfig;
use crate::metrics::ReplayReason;
use crate::upstream::codec::HeadForm;
use crate::upstream::conn::{Upload, UploadFraming};

use super::outbound::Outbound;

/// Methods whose request may be sent twice (RFC 9110 §9.2.2).
pub(super) fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Why a request of `method` may be sent to another backend after one received it, if it
/// may. `has_body`: it has a body; `body_held`: the whole body is in memory (true with no
/// body); `has_key`: it carries an `Idempotency-Key` header. A bodiless idempotent request
/// keeps its reason (and `--retry-on-5xx` alone decides it) whether or not it has a key.
pub(super) fn replay_reason(
    retry: &RetryConfig,
    method: &Method,
    has_body: bool,
    body_held: bool,
    has_key: impl FnOnce() -> bool,
) -> Option<ReplayReason> {
    if retry.on_5xx && !has_body && is_idempotent(method) {
        Some(ReplayReason::Idempotent)
    } else if retry.replay_idempotency_key && body_held && has_key() {
        Some(ReplayReason::IdempotencyKey)
    } else {
        None
    }
}

/// The body a replay keeps: a reference to `body`'s bytes, or, when it is empty, nothing
/// at all (not even a reference count).
pub(super) fn keep(body: &Bytes) -> Bytes {
    if body.is_empty() {
        Bytes::new()
    } else {
        body.clone()
    }
}

/// What sending a request again takes.
pub(super) enum Replay {
    /// A plain HTTP/1.1 request.
    Head {
        /// The serialized head (shared bytes: a reference count, not a copy).
        head: Bytes,
        /// The whole body, shared the same way; empty for a bodiless request.
        body: Bytes,
        /// Its method (the response's framing depends on it).
        method: Method,
        /// How to keep the response head.
        form: HeadForm,
        /// Why sending it again is safe.
        reason: ReplayReason,
    },
    /// A bodiless upgrade request's parts, and why sending it again is safe. Boxed: rare,
    /// and inline it would widen every request's future (whose moves are memcpys).
    Parts(Box<(Method, Uri, HeaderMap)>, ReplayReason),
}

impl Replay {
    /// Why sending the request again is safe.
    pub(super) fn reason(&self) -> ReplayReason {
        match self {
            Self::Head { reason, .. } | Self::Parts(_, reason) => *reason,
        }
    }

    /// The request, ready to send again from its first byte.
    pub(super) fn rebuild(&self) -> Outbound {
        match self {
            Self::Head {
                head,
                body,
                method,
                form,
                ..
            } => Outbound::Conn {
                upload: upload(head, body),
                method: method.clone(),
                form: *form,
            },
            Self::Parts(parts, _) => {
                let (method, uri, headers) = &**parts;
                let mut r = Request::new(ReqBody::empty());
                *r.method_mut() = method.clone();
                *r.uri_mut() = uri.clone();
                *r.headers_mut() = headers.clone();
                Outbound::Upgrade(r)
            }
        }
    }
}

/// An upload of `head` and the whole `body`, framed by its length: the head says the same,
/// as it carries the client's `Content-Length` (a held body always had one).
fn upload(head: &Bytes, body: &Bytes) -> Upload {
    let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
    let body = (!body.is_empty()).then(|| ReqBody::buffered(body.clone()));
    Upload::new(head.clone(), body, UploadFraming::Length(len))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn retry(on_5xx: bool, replay_idempotency_key: bool) -> RetryConfig {
        RetryConfig {
            on_5xx,
            replay_idempotency_key,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn bodiless_idempotent_requests_replay_only_under_retry_on_5xx_as_before() {
        for key in [false, true] {
            let reason = replay_reason(&retry(true, true), &Method::GET, false, true, || key);
            assert_eq!(reason, Some(ReplayReason::Idempotent), "key {key}");
            let reason = replay_reason(&retry(true, false), &Method::PUT, false, true, || key);
            assert_eq!(reason, Some(ReplayReason::Idempotent), "key {key}");
        }
        let reason = replay_reason(&retry(false, true), &Method::GET, false, true, || false);
        assert_eq!(reason, None);
        // A body (held or not) makes an idempotent method need a key too.
        let reason = replay_reason(&retry(true, true), &Method::PUT, true, true, || false);
        assert_eq!(reason, None);
    }

    #[test]
    fn a_keyed_request_with_a_held_body_replays_whatever_its_method() {
        for on_5xx in [false, true] {
            for method in [Method::POST, Method::PATCH, Method::PUT, Method::GET] {
                let reason = replay_reason(&retry(on_5xx, true), &method, true, true, || true);
                assert_eq!(
                    reason,
                    Some(ReplayReason::IdempotencyKey),
                    "{method} on_5xx {on_5xx}"
                );
            }
            // Bodiless: nothing to hold, so held.
            let reason = replay_reason(&retry(on_5xx, true), &Method::POST, false, true, || true);
            assert_eq!(reason, Some(ReplayReason::IdempotencyKey));
            // Without --retry-on-5xx a keyed GET gets the key's reason.
            if !on_5xx {
                let reason = replay_reason(&retry(false, true), &Method::GET, false, true, || true);
                assert_eq!(reason, Some(ReplayReason::IdempotencyKey));
            }
        }
    }

    #[test]
    fn no_replay_without_the_key_the_setting_or_a_held_body() {
        let post = Method::POST;
        assert_eq!(
            replay_reason(&retry(true, true), &post, true, true, || false),
            None
        );
        assert_eq!(
            replay_reason(&retry(true, false), &post, true, true, || true),
            None
        );
        // A streamed body was consumed by the first attempt.
        assert_eq!(
            replay_reason(&retry(true, true), &post, true, false, || true),
            None
        );
    }

    #[test]
    fn the_key_is_looked_up_only_when_a_keyed_replay_could_follow() {
        let asked = Cell::new(0);
        let has_key = || {
            asked.set(asked.get() + 1);
            true
        };
        replay_reason(&retry(true, false), &Method::POST, true, true, has_key);
        replay_reason(&retry(true, true), &Method::POST, true, false, has_key);
        replay_reason(&retry(true, true), &Method::GET, false, true, has_key);
        assert_eq!(asked.get(), 0);
        replay_reason(&retry(false, true), &Method::POST, true, true, has_key);
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn a_replay_keeps_its_reason_and_rebuilds_every_time() {
        let replay = Replay::Head {
            head: Bytes::from_static(b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\n"),
            body: Bytes::from_static(b"{}"),
            method: Method::POST,
            form: HeadForm::Raw,
            reason: ReplayReason::IdempotencyKey,
        };
        assert_eq!(replay.reason(), ReplayReason::IdempotencyKey);
        for _ in 0..2 {
            let Outbound::Conn { upload, method, .. } = replay.rebuild() else {
                panic!("a plain request rebuilds as one");
            };
            assert_eq!(method, Method::POST);
            assert!(!upload.is_written() && !upload.is_done());
        }
    }
}
