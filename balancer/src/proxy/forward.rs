//! Forwarding one request: validate, rate-limit, pick a backend, wait for a turn, send over a
//! pooled connection, retry elsewhere when the request never reached the backend, and hand
//! the streamed response back wrapped so the connection returns to the pool when it ends.
//!
//! Plain HTTP/1.1 requests go through the balancer's own client ([`crate::upstream::conn`]):
//! the head is serialized once, and the request's task writes it and reads the response
//! itself. Protocol-switch requests (`Upgrade`) use hyper's client on a fresh connection,
//! which hands the connection over to the tunnel on 101. Picking, queueing, sending and
//! retrying live in `super::attempt`; this module prepares the request and shapes the answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;

use crate::body::{BodyFlag, InBody, ReqBody};
use crate::config::Config;
use crate::limit::rate::RateDecision;
use crate::upstream::codec::{self, HeadForm};
use crate::upstream::conn::{Upload, UploadFraming};

use super::attempt::{Deadline, attempts};
use super::conn_info::ConnInfo;
use super::error::ProxyError;
use super::headers;
use super::outbound::Outbound;
use super::replay::{self, Replay, replay_reason};
use super::response_body::{RespBody, UpstreamBody};
use super::upgrade;

/// The hyper service function: never fails; errors become responses here.
pub async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Result<Response<RespBody>, Infallible> {
    Ok(respond(req.map(InBody::Hyper), &conn).await)
}

/// Answers one client request, from whichever server read it (hyper's or the balancer's
/// own, [`crate::downstream`]): forwards it, or turns the reason it could not be into a
/// response; counts it and writes its access-log line.
pub async fn respond(req: Request<InBody>, conn: &ConnInfo) -> Response<RespBody> {
    // tokio's clock (the real one, or the paused one in tests), read once for the deadline
    // and the duration metric.
    let start = tokio::time::Instant::now();
    let shared = &conn.shared;
    let cfg = shared.config.load_full();
    let access = cfg
        .access_log
        .then(|| (req.method().clone(), req.uri().path().to_owned()));
    let mut backend_addr = None;
    let resp = match forward(req, conn, &cfg, start, &mut backend_addr).await {
        Ok(resp) => resp,
        Err(error) => {
            shared.metrics.reject(error.rejection());
            // Refusals that come in floods during a stampede or an outage (client errors,
            // shedding, no backend) are counted in metrics and logged at debug only; the
            // health checker already logs backends going down. Backend faults are warnings.
            match error {
                ProxyError::QueueFull { .. }
                | ProxyError::QueueTimeout { .. }
                | ProxyError::NoBackend
                | ProxyError::RateLimited { .. } => {
                    tracing::debug!(peer = %conn.peer, %error, "request shed")
                }
                _ if error.side() == super::Side::Downstream => {
                    tracing::debug!(peer = %conn.peer, %error, "request refused")
                }
                _ => tracing::warn!(peer = %conn.peer, %error, "request failed"),
            }
            error.to_response()
        }
    };
    let elapsed = start.elapsed();
    shared
        .metrics
        .observe_request(resp.status().as_u16(), elapsed);
    if let Some((method, path)) = access {
        tracing::info!(
            target: "balancer::access",
            peer = %conn.peer,
            %method,
            path,
            status = resp.status().as_u16(),
            backend = backend_addr.map(|a: SocketAddr| a.to_string()),
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        );
    }
    resp
}

async fn forward(
    req: Request<InBody>,
    conn: &ConnInfo,
    cfg: &Config,
    start: tokio::time::Instant,
    backend_addr: &mut Option<SocketAddr>,
) -> Result<Response<RespBody>, ProxyError> {
    let mut req = match req.into_parts() {
        (
            parts,
            InBody::Encoded {
                head,
                body,
                idempotency_key,
            },
        ) => {
            // The balancer's own server checked framing and size and wrote the head; the rate
            // limiter keys on the peer (no trusted proxies, or the head would not be encoded).
            // The header map is empty: the server noted the Idempotency-Key while parsing.
            rate_limit(conn, cfg, &parts.headers)?;
            let reason = replay_reason(&cfg.retry, &parts.method, !body.is_empty(), true, || {
                idempotency_key
            });
            let replay = reason.map(|reason| Replay::Head {
                head: head.clone(),
                body: replay::keep(&body),
                method: parts.method.clone(),
                form: HeadForm::Raw,
                reason,
            });
            let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
            let body = (!body.is_empty()).then(|| ReqBody::buffered(body));
            let outbound = Outbound::Conn {
                upload: Upload::new(head, body, UploadFraming::Length(len)),
                method: parts.method,
                form: HeadForm::Raw,
            };
            return dispatch(outbound, replay, None, None, conn, cfg, start, backend_addr).await;
        }
        (parts, body) => Request::from_parts(parts, body),
    };
    let is_h2 = req.version() == Version::HTTP_2;
    if !is_h2 && conn.ambiguous.swap(false, Ordering::AcqRel) {
        return Err(headers::FramingError::BothLengths.into());
    }
    let declared = headers::check_framing(req.headers(), is_h2)?;
    if let Some(len) = declared
        && len > cfg.limits.max_body_bytes
    {
        return Err(ProxyError::BodyTooLarge {
            limit: cfg.limits.max_body_bytes,
        });
    }
    rate_limit(conn, cfg, req.headers())?;

    let is_upgrade = !is_h2 && headers::is_upgrade(req.headers());
    let downstream_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    rewrite_request(&mut parts, conn, is_upgrade)?;

    let has_body = !body.is_end_stream();
    // Checked after the rewriting: an Idempotency-Key that `Connection` named was dropped
    // and never reaches the backend.
    let reason = replay_reason(
        &cfg.retry,
        &parts.method,
        has_body,
        !has_body || body.held().is_some(),
        || parts.headers.contains_key(&headers::IDEMPOTENCY_KEY),
    );
    // What a replay sends again with the head: the held body, if any.
    let replay_body = match (reason, body.held()) {
        (Some(_), Some(held)) => replay::keep(held),
        _ => Bytes::new(),
    };
    // The balancer's own server (whose requests arrive buffered) writes the response head
    // from the bytes the backend sent; hyper's needs a header map.
    let form = match body {
        InBody::Buffered(_) | InBody::Encoded { .. } => HeadForm::Raw,
        InBody::Hyper(_) => HeadForm::Map,
    };
    // Only a streamed body can fail on the client's side mid-send; bodiless and buffered
    // requests (most of them) skip the allocation.
    let (body, flag) = match body {
        InBody::Hyper(body) if has_body => {
            let flag = Arc::new(BodyFlag::default());
            let limited = ReqBody::limited(
                body,
                cfg.limits.max_body_bytes,
                cfg.timeouts.idle,
                Arc::clone(&flag),
            );
            (limited, Some(flag))
        }
        InBody::Hyper(_) => (ReqBody::empty(), None),
        InBody::Buffered(bytes) | InBody::Encoded { body: bytes, .. } => {
            (ReqBody::buffered(bytes), None)
        }
    };
    let (outbound, replay) = if is_upgrade {
        // An upgrade request is streamed by hyper: replayable only when bodiless.
        let replay = reason.map(|reason| Replay::Parts(clone_parts(&parts), reason));
        (Outbound::Upgrade(Request::from_parts(parts, body)), replay)
    } else {
        // The head is serialized once, here, and the same bytes go to whichever backend
        // takes the request (and again, with the held body, if it is replayed).
        let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let head = codec::encode_request_head(&parts.method, path, &parts.headers, chunked);
        let framing = if chunked {
            UploadFraming::Chunked
        } else {
            UploadFraming::Length(if has_body { declared.unwrap_or(0) } else { 0 })
        };
        let replay = reason.map(|reason| Replay::Head {
            head: head.clone(),
            body: replay_body,
            method: parts.method.clone(),
            form,
            reason,
        });
        let upload = Upload::new(head, has_body.then_some(body), framing);
        (
            Outbound::Conn {
                upload,
                method: parts.method,
                form,
            },
            replay,
        )
    };

    dispatch(
        outbound,
        replay,
        flag,
        downstream_upgrade,
        conn,
        cfg,
        start,
        backend_addr,
    )
    .await
}

/// Refuses a client over its rate.
fn rate_limit(conn: &ConnInfo, cfg: &Config, headers: &http::HeaderMap) -> Result<(), ProxyError> {
    if cfg.limits.rate_per_sec > 0.0 {
        let key = headers::client_key(conn.peer.ip(), headers, &cfg.limits.trust_forwarded);
        if let RateDecision::Limit { retry_after } = conn.shared.rate.check(
            key,
            Instant::now(),
            cfg.limits.rate_per_sec,
            cfg.limits.rate_burst,
        ) {
            return Err(ProxyError::RateLimited { retry_after });
        }
    }
    Ok(())
}

/// Sends a prepared request (retrying as allowed) and shapes the response for the client.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    outbound: Outbound,
    replay: Option<Replay>,
    flag: Option<Arc<BodyFlag>>,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    conn: &ConnInfo,
    cfg: &Config,
    start: tokio::time::Instant,
    backend_addr: &mut Option<SocketAddr>,
) -> Result<Response<RespBody>, ProxyError> {
    let shared = &conn.shared;
    shared.budget.deposit();
    let deadline = Deadline::new(start, cfg.timeouts.total);
    let (mut resp, exchange) =
        attempts(outbound, replay, conn, cfg, flag.as_deref(), &deadline).await?;
    *backend_addr = Some(exchange.backend().addr());

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = downstream_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            upgrade::spawn_tunnel(shared, down, up, exchange, cfg.timeouts.idle);
        }
        let (mut parts, _body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, true);
        return Ok(Response::from_parts(parts, RespBody::empty()));
    }
    headers::strip_hop_by_hop(resp.headers_mut(), false);
    let idle = cfg.timeouts.idle;
    Ok(resp.map(|body| RespBody::Upstream(UpstreamBody::new(body, exchange, idle))))
}

/// Origin-form URI, Host, forwarding headers, request id, hop-by-hop removal.
fn rewrite_request(
    parts: &mut Parts,
    conn: &ConnInfo,
    keep_upgrade: bool,
) -> Result<(), ProxyError> {
    rewrite_parts(parts, &conn.peer_ip, conn.is_tls, keep_upgrade)
}

/// [`rewrite_request`] given the client's address (as a header value) and whether it came
/// over TLS. The balancer's own server applies the same rewriting to bytes (its
/// `encode_upstream_head`); a property test holds the two to the same result.
pub(crate) fn rewrite_parts(
    parts: &mut Parts,
    peer_ip: &HeaderValue,
    is_tls: bool,
    keep_upgrade: bool,
) -> Result<(), ProxyError> {
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers, keep_upgrade);
    let host = match parts.headers.get(header::HOST) {
        Some(h) => h.clone(),
        None => {
            let Some(auth) = authority.as_deref() else {
                return Err(ProxyError::BadRequest("missing Host"));
            };
            let v =
                HeaderValue::from_str(auth).map_err(|_| ProxyError::BadRequest("bad authority"))?;
            parts.headers.insert(header::HOST, v.clone());
            v
        }
    };
    let proto = if is_tls { "https" } else { "http" };
    headers::set_forwarded(&mut parts.headers, peer_ip, proto, Some(host));
    headers::ensure_request_id(&mut parts.headers);
    Ok(())
}

fn clone_parts(p: &Parts) -> Box<(Method, Uri, http::HeaderMap)> {
    Box::new((p.method.clone(), p.uri.clone(), p.headers.clone()))
}
