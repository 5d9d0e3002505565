//! The admin HTTP server and its routes.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `GET /metrics` | token under `--admin-auth all` | Prometheus/OpenMetrics text |
//! | `GET /status` | token under `--admin-auth all` | HTML table, refreshes itself |
//! | `GET /status.json` | token under `--admin-auth all` | JSON snapshot |
//! | `POST /backends` `{"addr","weight"?}` | token | 201, 400 bad body, 409 exists |
//! | `DELETE /backends/{addr}` | token | 202 (draining, removed when idle), 404 |
//!
//! The token, when configured, is checked as `Authorization: Bearer <token>` in constant time;
//! a request without it gets 401.
//! Request bodies are capped at [`MAX_ADMIN_BODY_BYTES`] and read under a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use plumbing::accept::{Admitted, CappedListener, WhenFull};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::config::{AdminAuth, BackendSpec, MAX_WEIGHT};
use crate::state::{BackendError, BalancerState};

use super::status;

/// Largest admin request body.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;
/// Time to read an admin request body.
pub const ADMIN_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// `POST /backends` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBackend {
    /// `ip:port`.
    pub addr: SocketAddr,
    /// Weight, 1 by default.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Serves the admin listener until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<BalancerState>) {
    let listener = CappedListener::new(listener, MAX_CONNECTIONS, WhenFull::Wait);
    while let Some(Admitted { stream, peer, slot }) = listener.admit(&shared.hard_stop).await {
        let shared2 = Arc::clone(&shared);
        shared.background.spawn(async move {
            let svc_shared = Arc::clone(&shared2);
            let service = service_fn(move |req| route(req, Arc::clone(&svc_shared)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = shared2.hard_stop.cancelled() => Ok(()),
            };
            if let Err(error) = r {
                tracing::debug!(%peer, %error, "admin connection error");
            }
            drop(slot);
        });
    }
}

/// Admin connections served at once (status pages, scrapers, scripts); more wait to connect.
const MAX_CONNECTIONS: usize = 256;

type AdminResponse = Response<Full<Bytes>>;

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> AdminResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_error(status: StatusCode, msg: &str) -> AdminResponse {
    let body = serde_json::json!({ "error": msg }).to_string();
    text(status, "application/json", body)
}

fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(
    req: Request<Incoming>,
    shared: Arc<BalancerState>,
) -> Result<AdminResponse, Infallible> {
    let path = req.uri().path().to_owned();
    let (token, auth) = {
        let cfg = shared.config.load();
        (cfg.admin_token.clone(), cfg.admin_auth)
    };
    let allowed = authorized(&req, token.as_deref());
    if !allowed && (auth == AdminAuth::All || req.method() != Method::GET) {
        return Ok(json_error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ));
    }
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            plumbing::metrics::CONTENT_TYPE,
            shared.metrics_text(),
        ),
        (&Method::GET, "/status") => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            status::render_html(&status::snapshot(&shared)),
        ),
        (&Method::GET, "/status.json") => match serde_json::to_string(&status::snapshot(&shared)) {
            Ok(s) => text(StatusCode::OK, "application/json", s),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        (&Method::POST, "/backends") => add_backend(req, &shared).await,
        (&Method::DELETE, p) if p.starts_with("/backends/") => {
            remove_backend(p.trim_start_matches("/backends/"), &shared)
        }
        (_, "/metrics" | "/status" | "/status.json" | "/backends") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such admin route"),
    };
    Ok(resp)
}

async fn add_backend(req: Request<Incoming>, shared: &Arc<BalancerState>) -> AdminResponse {
    let body = Limited::new(req.into_body(), MAX_ADMIN_BODY_BYTES);
    let bytes = match tokio::time::timeout(ADMIN_BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(_) => return json_error(StatusCode::REQUEST_TIMEOUT, "body read timed out"),
    };
    let add: AddBackend = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if add.weight == 0 || add.weight > MAX_WEIGHT {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("weight must be 1..={MAX_WEIGHT}"),
        );
    }
    let spec = BackendSpec::new(add.addr).with_weight(add.weight);
    match shared.add_backend(spec) {
        Ok(()) => text(
            StatusCode::CREATED,
            "application/json",
            serde_json::json!({ "addr": add.addr.to_string(), "weight": add.weight }).to_string(),
        ),
        Err(e @ BackendError::Exists(_)) => json_error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn remove_backend(addr_text: &str, shared: &Arc<BalancerState>) -> AdminResponse {
    let Ok(addr) = addr_text.parse::<SocketAddr>() else {
        return json_error(StatusCode::BAD_REQUEST, "backend address must be ip:port");
    };
    match shared.drain_backend(addr) {
        Ok(()) => text(
            StatusCode::ACCEPTED,
            "application/json",
            serde_json::json!({ "addr": addr.to_string(), "state": "draining" }).to_string(),
        ),
        Err(e @ BackendError::NotFound(_)) => json_error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
