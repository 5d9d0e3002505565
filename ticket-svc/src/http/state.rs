//! What every handler shares: [`ApiConfig`] and [`ApiState`] (the store, the queue, metrics and
//! the event cache behind one `Arc`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::domain::{Event, EventId};
use crate::metrics::Metrics;
use crate::queue::PurchaseQueue;
use crate::store::Store;

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
    pub(super) store: Arc<S>,
    pub(super) queue: Arc<Q>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) registry: Arc<Registry>,
    pub(super) config: ApiConfig,
    pub(super) events: Mutex<HashMap<EventId, Arc<Event>>>,
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
