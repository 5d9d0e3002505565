//! Per-route request metrics and the request span, as a tower layer put on each route.
//!
//! Each route gets its own layer, built once with its template (`/events/{id}`) and its
//! latency histogram already looked up, so a request costs no allocation and no label lookup
//! for its latency, and the route label set stays bounded by construction. The fallback is
//! `unmatched`. This replaced an `axum::middleware::from_fn` over the whole router, which
//! cloned the router, boxed a future and built two label strings on every request: about 3%
//! of the stack's instructions in a rush (callgrind, `ticket-svc up` under a crowd).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::metrics::{Metrics, RequestLabels, RouteLabels};

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Counts and times the requests of one route.
#[derive(Clone)]
pub struct TrackLayer(Arc<RouteMetrics>);

/// The smallest and largest status code with a slot of its own in [`RouteMetrics::by_status`].
const STATUSES: std::ops::RangeInclusive<u16> = 100..=599;

struct RouteMetrics {
    route: &'static str,
    metrics: Arc<Metrics>,
    duration: Histogram,
    /// This route's request counter per status code, looked up in the family once per code:
    /// the family's lookup hashes the labels under a lock, which showed in a rush's profile.
    by_status: Box<[OnceLock<Counter>]>,
}

impl RouteMetrics {
    fn count(&self, status: u16) {
        let family = || {
            self.metrics
                .http_requests
                .get_or_create(&RequestLabels {
                    route: self.route,
                    status,
                })
                .clone()
        };
        match self
            .by_status
            .get(usize::from(status.wrapping_sub(*STATUSES.start())))
        {
            Some(slot) => slot.get_or_init(family).inc(),
            None => family().inc(),
        };
    }
}

impl TrackLayer {
    /// The layer for `route` (its template, as registered).
    pub fn new(metrics: &Arc<Metrics>, route: &'static str) -> Self {
        let duration = metrics
            .http_duration
            .get_or_create(&RouteLabels { route })
            .clone();
        Self(Arc::new(RouteMetrics {
            route,
            metrics: Arc::clone(metrics),
            duration,
            by_status: STATUSES.map(|_| OnceLock::new()).collect(),
        }))
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`TrackLayer`]'s service.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    layer: TrackLayer,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let span =
            tracing::debug_span!("request", method = %req.method(), route = self.layer.0.route);
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TrackFuture {
            inner: inner.instrument(span),
            started: Instant::now(),
            layer: self.layer.clone(),
        }
    }
}

pin_project! {
    /// A tracked request in progress: records its latency and status when it is answered.
    pub struct TrackFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        started: Instant,
        layer: TrackLayer,
    }
}

impl<F> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = std::task::ready!(this.inner.poll(cx));
        let route = &this.layer.0;
        route.duration.observe(this.started.elapsed().as_secs_f64());
        route.count(resp.status().as_u16());
        Poll::Ready(Ok(resp))
    }
}
