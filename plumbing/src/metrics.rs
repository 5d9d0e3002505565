//! Prometheus metrics over HTTP: the text encoding every listener answers `GET /metrics` with,
//! and a small listener of its own (`GET /metrics`, `GET /healthz`, optionally a plain-text
//! `GET /status` page) for processes that have no HTTP server otherwise (the broker, a worker,
//! the cluster runner).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE as CONTENT_TYPE_HEADER, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{Admitted, CappedListener, WhenFull};

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections the metrics listener serves at once; scrapers need one or two.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a scraper may take to send its request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for scrapes in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The registry in the OpenMetrics text format.
///
/// # Errors
/// When a metric cannot be written (a collector's error).
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(content_type));
    r
}

/// A page made anew for each request, served as plain text.
pub type Page = Arc<dyn Fn() -> String + Send + Sync>;

fn handle(
    req: &Request<Incoming>,
    registry: &Registry,
    refresh: &(dyn Fn() + Send + Sync),
    status: Option<&Page>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path(), status) {
        (&Method::GET, "/status", Some(page)) => {
            respond(StatusCode::OK, "text/plain; charset=utf-8", page())
        }
        (&Method::GET, "/metrics", _) => {
            refresh();
            match encode(registry) {
                Ok(text) => respond(StatusCode::OK, CONTENT_TYPE, text),
                Err(_) => {
                    tracing::warn!("encoding metrics failed");
                    respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "encoding metrics failed\n",
                    )
                }
            }
        }
        (&Method::GET, "/healthz", _) => respond(StatusCode::OK, "text/plain", "ok\n"),
        (_, "/metrics" | "/healthz", _) | (_, "/status", Some(_)) => {
            respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n")
        }
        (_, _, Some(_)) => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /status, /metrics or /healthz\n",
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics or /healthz\n",
        ),
    }
}

/// Serves `GET /metrics` (calling `refresh` first, for gauges read on demand) and
/// `GET /healthz` on `listener` until `shutdown` is cancelled, then lets scrapes in flight
/// finish for up to 2 s.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    refresh: impl Fn() + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    serve_with_status(listener, registry, refresh, None, shutdown).await;
}

/// [`serve`], and with a `status` page, `GET /status` answered with it.
pub async fn serve_with_status(
    listener: TcpListener,
    registry: Arc<Registry>,
    refresh: impl Fn() + Send + Sync + 'static,
    status: Option<Page>,
    shutdown: CancellationToken,
) {
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(refresh);
    let listener = CappedListener::new(listener, MAX_CONNECTIONS, WhenFull::Wait);
    let conns = TaskTracker::new();
    while let Some(Admitted { stream, slot, .. }) = listener.admit(&shutdown).await {
        let registry = Arc::clone(&registry);
        let refresh = Arc::clone(&refresh);
        let status = status.clone();
        let stop = shutdown.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let resp = handle(&req, &registry, refresh.as_ref(), status.as_ref());
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
            }
            drop(slot);
        });
    }
    conns.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conns.wait()).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::testing::http_get;

    #[tokio::test]
    async fn metrics_are_refreshed_then_served_and_other_paths_are_named() {
        let mut registry = Registry::default();
        let scrapes = Counter::<u64, AtomicU64>::default();
        registry.register("test_scrapes", "scrapes seen", scrapes.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let refreshed = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&refreshed);
        let server = tokio::spawn(serve(
            listener,
            Arc::new(registry),
            move || {
                seen.fetch_add(1, Ordering::Relaxed);
                scrapes.inc();
            },
            stop.clone(),
        ));
        let r = http_get(addr, "/metrics").await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.contains("test_scrapes_total 1"), "{}", r.body);
        assert_eq!(refreshed.load(Ordering::Relaxed), 1);
        assert_eq!(http_get(addr, "/healthz").await.unwrap().status, 200);
        let other = http_get(addr, "/nope").await.unwrap();
        assert_eq!(other.status, 404);
        assert!(other.body.contains("/metrics"));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the listener stops on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn a_status_page_is_made_for_each_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let n = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&n);
        let page: Page =
            Arc::new(move || format!("page {}\n", seen.fetch_add(1, Ordering::Relaxed)));
        let server = tokio::spawn(serve_with_status(
            listener,
            Arc::new(Registry::default()),
            || {},
            Some(page),
            stop.clone(),
        ));
        assert_eq!(http_get(addr, "/status").await.unwrap().body, "page 0\n");
        assert_eq!(http_get(addr, "/status").await.unwrap().body, "page 1\n");
        assert_eq!(http_get(addr, "/metrics").await.unwrap().status, 200);
        let other = http_get(addr, "/nope").await.unwrap();
        assert!(other.body.contains("/status"), "{}", other.body);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the listener stops on shutdown")
            .unwrap();
    }
}
