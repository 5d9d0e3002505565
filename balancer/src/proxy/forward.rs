//! Forwarding one request: validate, rate-limit, pick a backend, wait for a turn, send over a
//! pooled connection, retry elsewhere when the request never reached the backend, and hand
//! the streamed response back wrapped so the connection returns to the pool when it ends.
//!
//! Plain HTTP/1.1 requests go through the balancer's own client ([`crate::upstream::conn`]):
//! the head is serialized once, and the request's task writes it and reads the response
//! itself. Protocol-switch requests (`Upgrade`) use hyper's client on a fresh connection,
//! which hands the connection over to the tunnel on 101.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{BodyFault, BodyFlag, InBody, ReqBody, RespBody, Source, UpstreamBody};
use crate::config::Config;
use crate::limit::queue::QueueError;
use crate::limit::rate::RateDecision;
use crate::state::Shared;
use crate::upstream::codec::{self, HeadForm};
use crate::upstream::conn::{Call, ConnError, Connection, Upload, UploadFraming};
use crate::upstream::{Backend, Exchange};

use super::error::ProxyError;
use super::headers;
use super::upgrade;

/// What the proxy knows about the client connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Arrived over TLS.
    pub is_tls: bool,
    /// Worker runtime index (selects the connection pool).
    pub worker: usize,
    /// The client's IP as a header value, rendered once for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// Raised by [`crate::sniff::SniffIo`] when a head carried both Content-Length and
    /// Transfer-Encoding (hyper hides the conflict from the request itself).
    pub ambiguous: Arc<AtomicBool>,
}

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
        (parts, InBody::Encoded { head, body }) => {
            // The balancer's own server checked framing and size and wrote the head; the rate
            // limiter keys on the peer (no trusted proxies, or the head would not be encoded).
            rate_limit(conn, cfg, &parts.headers)?;
            let replayable = cfg.retry.on_5xx && body.is_empty() && is_idempotent(&parts.method);
            let replay =
                replayable.then(|| Replay::Head(head.clone(), parts.method.clone(), HeadForm::Raw));
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
    // Idempotent bodiless requests can be rebuilt, so they may be retried after a 502/503.
    let replayable = cfg.retry.on_5xx && !has_body && is_idempotent(&parts.method);
    let (outbound, replay) = if is_upgrade {
        let replay = replayable.then(|| Replay::Parts(clone_parts(&parts)));
        (Outbound::Upgrade(Request::from_parts(parts, body)), replay)
    } else {
        // The head is serialized once, here, and the same bytes go to whichever backend
        // takes the request (and again if a bodiless request is replayed).
        let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let head = codec::encode_request_head(&parts.method, path, &parts.headers, chunked);
        let framing = if chunked {
            UploadFraming::Chunked
        } else {
            UploadFraming::Length(if has_body { declared.unwrap_or(0) } else { 0 })
        };
        let replay = replayable.then(|| Replay::Head(head.clone(), parts.method.clone(), form));
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

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn clone_parts(p: &Parts) -> Box<(Method, Uri, http::HeaderMap)> {
    Box::new((p.method.clone(), p.uri.clone(), p.headers.clone()))
}

/// A request on its way to a backend.
enum Outbound {
    /// Plain HTTP/1.1: the balancer's own client over a pooled connection.
    Conn {
        /// Head and body.
        upload: Upload,
        /// Its method (the response's framing depends on it).
        method: Method,
        /// How to keep the response head.
        form: HeadForm,
    },
    /// A protocol switch: hyper's client on a fresh connection, which hands the
    /// connection over on 101.
    Upgrade(Request<ReqBody>),
}

/// What rebuilding a bodiless request takes.
enum Replay {
    /// The serialized head (shared bytes: a reference count, not a copy).
    Head(Bytes, Method, HeadForm),
    /// An upgrade request's parts. Boxed: rare, and inline it would widen every request's
    /// future (whose moves are memcpys).
    Parts(Box<(Method, Uri, http::HeaderMap)>),
}

impl Replay {
    fn rebuild(&self) -> Outbound {
        match self {
            Self::Head(head, method, form) => Outbound::Conn {
                upload: Upload::new(head.clone(), None, UploadFraming::Length(0)),
                method: method.clone(),
                form: *form,
            },
            Self::Parts(parts) => {
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

/// The whole-request deadline (`--request-timeout`). It is applied through each wait's own
/// timeout (queue, connect, upstream headers) — whichever ends first — so a request runs
/// one timer at a time instead of an outer one around inner ones.
struct Deadline {
    at: tokio::time::Instant,
    total: Duration,
}

/// Which limit a bounded wait hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// The wait's own timeout.
    Step,
    /// The whole-request deadline.
    Request,
}

impl Deadline {
    fn new(start: tokio::time::Instant, total: Duration) -> Self {
        Self {
            at: start.checked_add(total).unwrap_or(start),
            total,
        }
    }

    /// When a wait bounded by `step` and starting `now` must end, and which limit that is.
    fn limit(&self, now: tokio::time::Instant, step: Duration) -> (tokio::time::Instant, Expiry) {
        match now.checked_add(step) {
            Some(end) if end < self.at => (end, Expiry::Step),
            _ => (self.at, Expiry::Request),
        }
    }

    /// As [`Deadline::limit`], as a duration from now (for APIs that take one).
    fn limit_for(&self, step: Duration) -> (Duration, Expiry) {
        let now = tokio::time::Instant::now();
        let (end, expiry) = self.limit(now, step);
        (end.saturating_duration_since(now), expiry)
    }

    fn error(&self) -> ProxyError {
        ProxyError::Deadline(self.total)
    }

    /// Why a wait for `backend`'s response head that `limit` bounded with `expiry` ran out.
    fn header_wait_error(
        &self,
        expiry: Expiry,
        backend: SocketAddr,
        timeout: Duration,
    ) -> ProxyError {
        if expiry == Expiry::Request {
            self.error()
        } else {
            ProxyError::UpstreamTimeout { backend, timeout }
        }
    }
}

/// Backends already tried for one request. Almost every request tries one, so the first few
/// live inline and only long retry chains allocate.
#[derive(Default)]
struct Tried {
    inline: [Option<SocketAddr>; 3],
    more: Vec<SocketAddr>,
}

impl Tried {
    fn push(&mut self, addr: SocketAddr) {
        match self.inline.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(addr),
            None => self.more.push(addr),
        }
    }

    fn contains(&self, addr: &SocketAddr) -> bool {
        self.inline.iter().any(|s| s.as_ref() == Some(addr)) || self.more.contains(addr)
    }
}

/// Tries backends until one answers, a non-retryable error happens, or retries run out.
async fn attempts(
    req: Outbound,
    replay: Option<Replay>,
    conn: &ConnInfo,
    cfg: &Config,
    flag: Option<&BodyFlag>,
    deadline: &Deadline,
) -> Result<(Response<Source>, Exchange), ProxyError> {
    let shared = &conn.shared;
    let mut tried = Tried::default();
    let mut pending = Some(req);
    let mut last_error: Option<ProxyError> = None;
    for attempt in 0..=cfg.retry.max_retries {
        let req = match pending.take() {
            Some(r) => r,
            None => match &replay {
                Some(replay) => replay.rebuild(),
                None => break,
            },
        };
        if attempt > 0 {
            if !shared.budget.try_withdraw() {
                tracing::debug!("retry budget exhausted");
                break;
            }
            shared.metrics.retry();
        }
        let Some(backend) = shared.backends.load().pick(|a| tried.contains(a)) else {
            // Every backend refused the connection (or none is up): all are down.
            if last_error.as_ref().is_some_and(ProxyError::is_retryable) {
                last_error = Some(ProxyError::NoBackend);
            }
            break;
        };
        tried.push(backend.addr());
        let gate = backend.gate();
        let admission = match gate.try_admit() {
            Some(admission) => admission,
            None => {
                let (wait, expiry) = deadline.limit_for(cfg.timeouts.queue);
                // Boxed: waiting in the queue is the slow path, and its future inline would
                // widen every request's future.
                Box::pin(gate.admit(wait)).await.map_err(|e| match e {
                    QueueError::Full => ProxyError::QueueFull {
                        backend: backend.addr(),
                    },
                    QueueError::Timeout if expiry == Expiry::Request => deadline.error(),
                    QueueError::Timeout => ProxyError::QueueTimeout {
                        backend: backend.addr(),
                    },
                })?
            }
        };
        drop(gate);
        let mut exchange = Exchange::begin(Arc::clone(&backend), conn.worker, admission);
        let sent = match req {
            Outbound::Conn {
                upload,
                method,
                form,
            } => send(&mut exchange, upload, method, form, conn, cfg, deadline).await,
            // Boxed: rare, and inline its future would widen every request's.
            Outbound::Upgrade(req) => {
                Box::pin(send_upgrade(&backend, req, cfg, conn, deadline)).await
            }
        };
        match sent {
            Ok(resp) => {
                let status = resp.status();
                // A 503 with Retry-After is a live backend shedding load on purpose (the
                // ticket API answers so when the broker cannot take a purchase); ejecting it
                // would turn a brief upstream hiccup into "all backends down".
                let shedding = status == StatusCode::SERVICE_UNAVAILABLE
                    && (resp.headers().contains_key(header::RETRY_AFTER)
                        || matches!(resp.body(), Source::Conn(b)
                            if b.raw_head().is_some_and(|h| h.retry_after)));
                if status.is_server_error() && !shedding {
                    if backend.record_failure(cfg.passive.failures, cfg.passive.eject_for) {
                        tracing::warn!(backend = %backend.addr(), %status, "backend ejected");
                    }
                } else if !shedding {
                    backend.record_success();
                }
                let retry_5xx = replay.is_some()
                    && (status == StatusCode::BAD_GATEWAY
                        || status == StatusCode::SERVICE_UNAVAILABLE)
                    && attempt < cfg.retry.max_retries
                    && has_untried(shared, &tried);
                if retry_5xx {
                    // Drop the response (and the connection with it) and rebuild the request.
                    continue;
                }
                return Ok((resp, exchange));
            }
            Err(Failed { error, request }) => {
                if matches!(error, ProxyError::Deadline(_)) {
                    // The request ran out of time, not the backend: no blame, no retry.
                    return Err(error);
                }
                let fault = flag.map_or(BodyFault::None, BodyFlag::fault);
                if fault != BodyFault::None {
                    return Err(ProxyError::ClientBody {
                        fault,
                        backend: backend.addr(),
                    });
                }
                backend.record_response(None, Duration::ZERO);
                if matches!(
                    error,
                    ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. }
                ) {
                    backend.record_connect_error();
                }
                if backend.record_failure(cfg.passive.failures, cfg.passive.eject_for) {
                    tracing::warn!(backend = %backend.addr(), %error, "backend ejected");
                }
                match request {
                    Some(r) if error.is_retryable() => {
                        tracing::debug!(backend = %backend.addr(), %error, "retrying elsewhere");
                        pending = Some(r);
                        last_error = Some(error);
                    }
                    // Sent, then the connection died without an answer: what the client would
                    // get is a 502, so an idempotent bodiless request is retried elsewhere
                    // when 502s are (`--retry-on-5xx`); the loop rebuilds it from `replay`.
                    None if replay.is_some()
                        && matches!(error, ProxyError::Exchange { sent: true, .. })
                        && has_untried(shared, &tried) =>
                    {
                        tracing::debug!(backend = %backend.addr(), %error,
                            "connection lost under an idempotent request; retrying elsewhere");
                        last_error = Some(error);
                    }
                    _ => return Err(error),
                }
            }
        }
    }
    if last_error.as_ref().is_some_and(ProxyError::is_retryable) && !has_untried(shared, &tried) {
        // Every backend was tried and none could be reached: all are down.
        return Err(ProxyError::NoBackend);
    }
    Err(last_error.unwrap_or(ProxyError::NoBackend))
}

/// Some available backend has not been tried for this request yet.
fn has_untried(shared: &Shared, tried: &Tried) -> bool {
    shared
        .backends
        .load()
        .backends
        .iter()
        .any(|b| b.is_available() && !tried.contains(&b.addr()))
}

/// A failed send, with the request when it was not consumed.
struct Failed {
    error: ProxyError,
    request: Option<Outbound>,
}

/// Sends a plain HTTP/1.1 request on a pooled connection (skipping stale ones) or a fresh
/// one, and reads the response head. Everything runs in the request's task: no channel, no
/// connection task.
async fn send(
    exchange: &mut Exchange,
    mut upload: Upload,
    method: Method,
    form: HeadForm,
    conn: &ConnInfo,
    cfg: &Config,
    deadline: &Deadline,
) -> Result<Response<Source>, Failed> {
    let backend = Arc::clone(exchange.backend());
    let addr = backend.addr();
    // Up to three stale pooled connections may be skipped; the last try is always fresh.
    for round in 0..4 {
        let pooled = if round == 3 {
            None
        } else {
            backend.pool(conn.worker).take(cfg.timeouts.idle)
        };
        let (connection, is_pooled) = match pooled {
            Some((c, _idle_for)) => (c, true),
            // Boxed: the connect future is large and rare; inline it would be copied
            // with every request's future.
            None => match Box::pin(connect(&backend, cfg, deadline)).await {
                Ok(stream) => (Connection::new(stream), false),
                Err(error) => {
                    return Err(Failed {
                        error,
                        request: Some(Outbound::Conn {
                            upload,
                            method,
                            form,
                        }),
                    });
                }
            },
        };
        let sent_at = tokio::time::Instant::now();
        let (until, expiry) = deadline.limit(sent_at, cfg.timeouts.upstream_header);
        let mut call = Call::new(connection, upload, form);
        let polled =
            tokio::time::timeout_at(until, std::future::poll_fn(|cx| call.poll_head(cx))).await;
        let error = match polled {
            Err(_) => {
                return Err(Failed {
                    error: deadline.header_wait_error(expiry, addr, cfg.timeouts.upstream_header),
                    request: None,
                });
            }
            Ok(Ok(mut head)) => match call.into_body(&method, &mut head) {
                Ok(body) => {
                    backend.record_response(Some(head.status.as_u16()), sent_at.elapsed());
                    let mut resp = Response::new(Source::Conn(body));
                    *resp.status_mut() = head.status;
                    *resp.headers_mut() = head.headers;
                    return Ok(resp);
                }
                Err(e) => {
                    return Err(Failed {
                        error: ProxyError::Exchange {
                            backend: addr,
                            sent: true,
                            source: e.into(),
                        },
                        request: None,
                    });
                }
            },
            Ok(Err(error)) => error,
        };
        upload = call.into_upload();
        let written = upload.is_written();
        let client_fault = matches!(error, ConnError::RequestBody(_));
        if is_pooled && !written && !client_fault {
            // The pooled connection died before a byte of our request went out: try another.
            continue;
        }
        // A pooled connection can die under a request: the backend's keep-alive timer closed
        // it as we wrote (the keep-alive race), or the backend crashed. A bodiless idempotent
        // request is safe to replay on a fresh connection (and, if the backend is gone, on
        // another backend), as nginx's `proxy_next_upstream error` does: its head is kept
        // anyway, so replaying costs nothing until it happens.
        if is_pooled && error.is_connection_lost() && is_idempotent(&method) && upload.restart() {
            tracing::debug!(backend = %addr, %error,
                "pooled connection failed under a request; replaying");
            continue;
        }
        return Err(Failed {
            error: ProxyError::Exchange {
                backend: addr,
                sent: written,
                source: error,
            },
            request: (!written && !client_fault).then_some(Outbound::Conn {
                upload,
                method,
                form,
            }),
        });
    }
    // Unreachable in practice: round 3 always uses a fresh connection and returns.
    Err(Failed {
        error: ProxyError::NoBackend,
        request: Some(Outbound::Conn {
            upload,
            method,
            form,
        }),
    })
}

/// Sends a protocol-switch request with hyper's client on a fresh connection (never
/// pooled: on 101 the connection becomes the tunnel).
async fn send_upgrade(
    backend: &Backend,
    req: Request<ReqBody>,
    cfg: &Config,
    conn: &ConnInfo,
    deadline: &Deadline,
) -> Result<Response<Source>, Failed> {
    let addr = backend.addr();
    let mut sender = match connect_hyper(backend, conn, cfg, deadline).await {
        Ok(s) => s,
        Err(error) => {
            return Err(Failed {
                error,
                request: Some(Outbound::Upgrade(req)),
            });
        }
    };
    let sent_at = tokio::time::Instant::now();
    let (until, expiry) = deadline.limit(sent_at, cfg.timeouts.upstream_header);
    match tokio::time::timeout_at(until, sender.try_send_request(req)).await {
        Err(_) => Err(Failed {
            error: deadline.header_wait_error(expiry, addr, cfg.timeouts.upstream_header),
            request: None,
        }),
        Ok(Ok(resp)) => {
            backend.record_response(Some(resp.status().as_u16()), sent_at.elapsed());
            Ok(resp.map(Source::Hyper))
        }
        Ok(Err(mut e)) => {
            let request = e.take_message();
            Err(Failed {
                error: ProxyError::Exchange {
                    backend: addr,
                    sent: request.is_none(),
                    source: ConnError::Hyper(e.into_error()),
                },
                request: request.map(Outbound::Upgrade),
            })
        }
    }
}

/// Opens a TCP connection to `backend` within the connect timeout (and the deadline).
async fn connect(
    backend: &Backend,
    cfg: &Config,
    deadline: &Deadline,
) -> Result<TcpStream, ProxyError> {
    let addr = backend.addr();
    let (until, expiry) = deadline.limit(tokio::time::Instant::now(), cfg.timeouts.connect);
    let stream = match tokio::time::timeout_at(until, TcpStream::connect(addr)).await {
        Err(_) if expiry == Expiry::Request => return Err(deadline.error()),
        Err(_) => return Err(ProxyError::ConnectTimeout { backend: addr }),
        Ok(Err(source)) => {
            return Err(ProxyError::Connect {
                backend: addr,
                source,
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens a hyper HTTP/1.1 client connection (protocol upgrades); its driver task is
/// tracked and stops at hard stop.
async fn connect_hyper(
    backend: &Backend,
    conn: &ConnInfo,
    cfg: &Config,
    deadline: &Deadline,
) -> Result<SendRequest<ReqBody>, ProxyError> {
    let addr = backend.addr();
    let stream = connect(backend, cfg, deadline).await?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Exchange {
            backend: addr,
            sent: false,
            source: ConnError::Hyper(source),
        })?;
    let stop = conn.shared.hard_stop.clone();
    conn.shared.background.spawn(async move {
        tokio::select! {
            r = connection.with_upgrades() => {
                if let Err(error) = r {
                    tracing::debug!(backend = %addr, %error, "upstream connection ended with error");
                }
            }
            _ = stop.cancelled() => {}
        }
    });
    Ok(sender)
}
