//! The route table over an [`ApiState`], and [`run_api`], which builds the state and serves it.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, any, get, post};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::server::{ServeConfig, serve};
use super::state::FrontDoor;
use super::state::{ApiConfig, ApiState};
use super::{access, line, page, routes, track};
use crate::metrics::Metrics;
use crate::queue::PurchaseQueue;
use crate::store::Store;

/// The API's routes over a state. Every route, and the fallback, is counted and timed under
/// its template (see `track`).
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
    let router = route(
        router,
        "/events/{id}/line",
        post(line::join::<S, Q>).get(line::status::<S, Q>),
    );
    let router = route(
        router,
        "/events/{id}/line/challenge",
        get(line::challenge::<S, Q>),
    );
    let router = route(router, "/events/{id}/permits", post(line::permit::<S, Q>));
    let router = route(router, "/e/{id}", get(page::show));
    let router = route(router, "/login", post(access::start_login::<S, Q>));
    let router = route(router, "/sessions", post(access::create_session::<S, Q>));
    let router = route(router, "/healthz", get(routes::healthz::<S, Q>));
    router
        .fallback_service(any(routes::not_found).layer(layers(track::UNMATCHED)))
        .with_state(state)
}

/// Where an API listens: the public listener (buyers, through the balancer) and, apart from it,
/// the operators' `/metrics` listener (none: metrics are not served).
#[derive(Debug)]
pub struct ApiListeners {
    /// The API's routes.
    pub public: TcpListener,
    /// `GET /metrics` only, for the operators' network.
    pub metrics: Option<TcpListener>,
}

/// Serves the API on its listeners until `shutdown` is cancelled, then drains. A configuration
/// out of range is an `InvalidInput` error before anything is served.
pub async fn run_api<S: Store, Q: PurchaseQueue>(
    listeners: ApiListeners,
    store: Arc<S>,
    queue: Arc<Q>,
    front: FrontDoor,
    api: ApiConfig,
    serve_config: ServeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    api.validate()
        .and_then(|()| serve_config.validate())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    store.register_read_metrics(&mut registry);
    let state = ApiState::new(store, queue, metrics, front, api);
    let gauges = state.clone();
    let pacer = state.clone().run_pacer(shutdown.clone());
    let metrics_server = async {
        if let Some(l) = listeners.metrics {
            let refresh = move || gauges.refresh_gauges();
            plumbing::metrics::serve(l, Arc::new(registry), refresh, shutdown.clone()).await;
        }
    };
    let (served, (), ()) = tokio::join!(
        serve(
            listeners.public,
            router(state),
            serve_config,
            shutdown.clone()
        ),
        metrics_server,
        pacer
    );
    served
}
