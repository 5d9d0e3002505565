//! The ticket HTTP API (routes and JSON per docs/DESIGN.md), on axum.
//!
//! `POST /events/{id}/purchases` answers 202 only after [`PurchaseQueue::enqueue`] returned: a
//! queue that fails or does not answer within [`ApiConfig::enqueue_timeout`] gets a 503 with
//! `Retry-After`; so does a store call that outlives [`ApiConfig::store_timeout`]. Every error becomes a status in exactly one place, [`AppError`]'s
//! `IntoResponse`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, any, get, post};
use prometheus_client::registry::Registry;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::{Event, EventId};
use crate::metrics::Metrics;
use crate::queue::PurchaseQueue;
use crate::store::Store;

mod error;
mod routes;
mod server;
mod track;

pub use error::{AppError, RETRY_AFTER_SECS};
pub use server::{ServeConfig, serve};

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The longest a purchase waits for the queue before it is answered 503.
    pub enqueue_timeout: Duration,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// The longest one store call may take before the request is answered 503.
    pub store_timeout: Duration,
    /// The longest a readiness check waits for each dependency.
    pub ready_timeout: Duration,
    /// Events remembered for validating purchases (their limits never change).
    pub event_cache_entries: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enqueue_timeout: Duration::from_secs(2),
            max_body_bytes: 16 * 1024,
            store_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(1),
            event_cache_entries: 10_000,
        }
    }
}

/// What every handler shares. axum clones the state for every request, so it is one `Arc`.
pub struct ApiState<S, Q>(Arc<Shared<S, Q>>);

/// The shared parts behind [`ApiState`].
pub struct Shared<S, Q> {
    store: Arc<S>,
    queue: Arc<Q>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    config: ApiConfig,
    events: Mutex<HashMap<EventId, Arc<Event>>>,
}

impl<S, Q> Clone for ApiState<S, Q> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S, Q> std::ops::Deref for ApiState<S, Q> {
    type Target = Shared<S, Q>;

    fn deref(&self) -> &Shared<S, Q> {
        &self.0
    }
}

impl<S: Store, Q: PurchaseQueue> ApiState<S, Q> {
    /// State over a store, a queue, metrics (registered in `registry`, which `/metrics` shows).
    pub fn new(
        store: Arc<S>,
        queue: Arc<Q>,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        config: ApiConfig,
    ) -> Self {
        Self(Arc::new(Shared {
            store,
            queue,
            metrics,
            registry,
            config,
            events: Mutex::new(HashMap::new()),
        }))
    }
}

/// The API's routes over a state. Every route, and the fallback, is counted and timed under
/// its template (see [`track`]).
pub fn router<S: Store, Q: PurchaseQueue>(state: ApiState<S, Q>) -> Router {
    let limit = state.config.max_body_bytes;
    let metrics = Arc::clone(&state.metrics);
    // Both layers in one `layer` call: axum boxes (and clones, per request) the service once per
    // call, and a router-wide `layer` would box every route once more.
    let layers = |path| {
        (
            DefaultBodyLimit::max(limit),
            track::TrackLayer::new(&metrics, path),
        )
    };
    let route = |router: Router<ApiState<S, Q>>,
                 path: &'static str,
                 methods: MethodRouter<ApiState<S, Q>>| {
        router.route(
            path,
            methods
                .fallback(routes::method_not_allowed)
                .layer(layers(path)),
        )
    };
    let router = Router::new();
    let router = route(router, "/events", post(routes::create_event::<S, Q>));
    let router = route(router, "/events/{id}", get(routes::show_event::<S, Q>));
    let router = route(
        router,
        "/events/{id}/purchases",
        post(routes::create_purchase::<S, Q>),
    );
    let router = route(
        router,
        "/purchases/{id}",
        get(routes::show_purchase::<S, Q>),
    );
    let router = route(router, "/healthz", get(routes::healthz::<S, Q>));
    let router = route(router, "/metrics", get(routes::metrics::<S, Q>));
    router
        .fallback_service(any(routes::not_found).layer(layers(track::UNMATCHED)))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled, then drains.
pub async fn run_api<S: Store, Q: PurchaseQueue>(
    listener: TcpListener,
    store: Arc<S>,
    queue: Arc<Q>,
    api: ApiConfig,
    serve_config: ServeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let state = ApiState::new(store, queue, metrics, Arc::new(registry), api);
    serve(listener, router(state), serve_config, shutdown).await
}
