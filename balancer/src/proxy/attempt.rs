//! Sending a prepared request to the backends: pick one, wait for a turn in its queue, send
//! over a pooled connection (or a fresh one, or hyper's client for protocol switches), and
//! retry elsewhere while the request never reached a backend, or send it again elsewhere when
//! a backend received it and failed it but a second delivery is safe (`super::replay`) — all
//! under the whole-request deadline. [`super::forward`] prepares requests and shapes the
//! answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{BodyFault, BodyFlag, ReqBody};
use crate::config::Config;
use crate::limit::concurrency::QueueError;
use crate::state::BalancerState;
use crate::upstream::codec::HeadForm;
use crate::upstream::conn::{Call, ConnError, Connection, Upload};
use crate::upstream::{Backend, Exchange};

use super::conn_info::ConnInfo;
use super::error::ProxyError;
use super::outbound::Outbound;
use super::replay::{Replay, is_idempotent};
use super::response_body::Source;

/// The whole-request deadline (`--request-timeout`). It is applied through each wait's own
/// timeout (queue, connect, upstream headers) — whichever ends first — so a request runs
/// one timer at a time instead of an outer one around inner ones.
pub(super) struct Deadline {
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
    pub(super) fn new(start: tokio::time::Instant, total: Duration) -> Self {
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
pub(super) async fn attempts(
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
        // Either the request as it is (first attempt, or one that never reached a backend),
        // or, after a backend received it, a replay rebuilt whole.
        let (req, replayed) = match pending.take() {
            Some(r) => (r, None),
            None => match &replay {
                Some(replay) => (replay.rebuild(), Some(replay.reason())),
                None => break,
            },
        };
        if attempt > 0 {
            if !shared.budget.try_withdraw() {
                tracing::debug!("retry budget exhausted");
                break;
            }
            shared.metrics.retry();
            if let Some(reason) = replayed {
                shared.metrics.replay(reason);
            }
        }
        let Some(picked) = shared.backends.load().pick(|a| tried.contains(a)) else {
            // Every backend refused the connection (or every one is draining): all are down.
            if last_error.as_ref().is_some_and(ProxyError::is_retryable) {
                last_error = Some(ProxyError::NoBackend);
            }
            break;
        };
        shared.backends.note_panic(picked.panic);
        if picked.panic {
            shared.metrics.panic_request();
        }
        let backend = picked.backend;
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
                // Only under `--retry-on-5xx`, whatever made the request replayable (a
                // bodiless idempotent request is replayable only under it anyway).
                let retry_5xx = replay.is_some()
                    && cfg.retry.on_5xx
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
                    // get is a 502, so a request that is safe to send twice (see
                    // `super::replay`: idempotent and bodiless under `--retry-on-5xx`, or
                    // carrying an Idempotency-Key with its body held) is retried elsewhere;
                    // the loop rebuilds it from `replay`.
                    None if replay.is_some()
                        && matches!(error, ProxyError::Exchange { sent: true, .. })
                        && has_untried(shared, &tried) =>
                    {
                        tracing::debug!(backend = %backend.addr(), %error,
                            "connection lost under a replayable request; retrying elsewhere");
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

/// Some backend that may be picked has not been tried for this request yet.
fn has_untried(shared: &BalancerState, tried: &Tried) -> bool {
    shared.backends.load().has_untried(|a| tried.contains(a))
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
