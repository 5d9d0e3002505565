//! Active health checks: GET the health path on a fresh connection every interval, with a
//! timeout. A backend goes down after `fall` consecutive failures and up after `rise`
//! consecutive passes; a pass also ends a passive ejection (errors that a backend the checker
//! sees serving answered were its dependencies' or a moment's). Only transitions are logged. The loop stops when the backend is
//! removed or the balancer shuts down, and never gives up on errors: an unreachable backend
//! is exactly what it is there to notice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Request, header};
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpStream;

use crate::body::ReqBody;
use crate::config::Config;

use super::Backend;

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The check took longer than its timeout.
    #[error("health check of {addr} timed out after {timeout:?}")]
    Timeout {
        /// The backend.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// Connecting failed.
    #[error("health check could not connect to {addr}: {source}")]
    Connect {
        /// The backend.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("health check of {addr} failed: {source}")]
    Http {
        /// The backend.
        addr: SocketAddr,
        /// The hyper error.
        source: hyper::Error,
    },
    /// The backend answered with a failing status.
    #[error("health check of {addr} answered {status}")]
    Status {
        /// The backend.
        addr: SocketAddr,
        /// The status.
        status: u16,
    },
    /// The request could not be built (bad health path).
    #[error("health check request for {addr} is invalid: {source}")]
    Request {
        /// The backend.
        addr: SocketAddr,
        /// The http error.
        source: http::Error,
    },
}

/// One check: passes on a 2xx or 3xx within `timeout`.
pub async fn check_once(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), HealthError> {
    match tokio::time::timeout(timeout, check_inner(addr, path)).await {
        Ok(r) => r,
        Err(_) => Err(HealthError::Timeout { addr, timeout }),
    }
}

async fn check_inner(addr: SocketAddr, path: &str) -> Result<(), HealthError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HealthError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| HealthError::Http { addr, source })?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "ticketrush-balancer-health")
        .header(header::CONNECTION, "close")
        .body(ReqBody::empty())
        .map_err(|source| HealthError::Request { addr, source })?;
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(req));
    // Drive the connection and the request together in this task: nothing to spawn or track.
    // With `Connection: close` the connection may finish first; the response is then already
    // delivered to the request future, so await it rather than racing.
    let resp = tokio::select! {
        biased;
        r = &mut send => r,
        r = &mut conn => {
            r.map_err(|source| HealthError::Http { addr, source })?;
            send.await
        }
    }
    .map_err(|source| HealthError::Http { addr, source })?;
    let status = resp.status().as_u16();
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(HealthError::Status { addr, status })
    }
}

/// Checks `backend` until it is removed or the balancer stops, with the health settings of
/// the live `config` as they are at each round (so a reload applies from the next check).
/// The config is all the loop needs of the balancer's state.
pub async fn health_loop(backend: Arc<Backend>, config: Arc<ArcSwap<Config>>) {
    let mut passes: u32 = 0;
    let mut fails: u32 = 0;
    let cancel = backend.cancel_token().clone();
    loop {
        let cfg = config.load().health.clone();
        // A backend added at run time is checked at once; the others after an interval with
        // up to 10% jitter, so checks of many backends do not fire in lockstep.
        if !backend.is_pending() {
            let jitter_ms = u64::try_from(cfg.interval.as_millis() / 10).unwrap_or(0);
            let jitter = Duration::from_millis(rand::rng().random_range(0..=jitter_ms));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(cfg.interval + jitter) => {}
            }
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = check_once(backend.addr(), &cfg.path, cfg.timeout) => r,
        };
        match result {
            Ok(()) => {
                fails = 0;
                passes = passes.saturating_add(1);
                if backend.is_pending() {
                    backend.clear_pending();
                    if backend.set_healthy(true) {
                        tracing::info!(backend = %backend.addr(), "new backend is up");
                    }
                }
                if !backend.is_healthy() && passes >= cfg.rise && backend.set_healthy(true) {
                    tracing::info!(backend = %backend.addr(), "backend is up");
                } else if backend.is_healthy() && backend.end_ejection() {
                    tracing::info!(backend = %backend.addr(),
                        "a passing health check ends the backend's passive ejection");
                }
            }
            Err(error) => {
                // A new backend that fails its first check is simply down: it rises normally.
                backend.clear_pending();
                passes = 0;
                fails = fails.saturating_add(1);
                if backend.is_healthy() && fails >= cfg.fall && backend.set_healthy(false) {
                    tracing::warn!(backend = %backend.addr(), %error, "backend is down");
                } else {
                    tracing::debug!(backend = %backend.addr(), %error, "health check failed");
                }
            }
        }
    }
}
