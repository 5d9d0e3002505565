//! What every handler shares: [`ApiConfig`] and [`ApiState`] (the store, the queue, metrics, the
//! [`FrontDoor`] and the caches behind one `Arc`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::AppError;
use crate::access::Access;
use crate::config_error::ConfigError;
use crate::domain::{Event, EventId};
use crate::line::{LineLog, OpenLines};
use crate::metrics::Metrics;
use crate::queue::PurchaseQueue;
use crate::store::Store;
use crate::store::StoreError;

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
    /// How long a waiting room's permit to buy stays valid.
    pub permit_ttl: Duration,
}

impl ApiConfig {
    /// Checks every setting's range.
    ///
    /// # Errors
    /// The first setting out of its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = "must be more than zero";
        ConfigError::check(
            !self.enqueue_timeout.is_zero(),
            "ApiConfig::enqueue_timeout",
            positive,
        )?;
        ConfigError::check(
            !self.store_timeout.is_zero(),
            "ApiConfig::store_timeout",
            positive,
        )?;
        ConfigError::check(
            !self.ready_timeout.is_zero(),
            "ApiConfig::ready_timeout",
            positive,
        )?;
        ConfigError::check(
            (1..=MAX_BODY_BYTES).contains(&self.max_body_bytes),
            "ApiConfig::max_body_bytes",
            format!("must be 1 to {MAX_BODY_BYTES}"),
        )?;
        ConfigError::check(
            self.event_cache_entries > 0,
            "ApiConfig::event_cache_entries",
            "must be at least 1",
        )?;
        ConfigError::check(
            !self.permit_ttl.is_zero(),
            "ApiConfig::permit_ttl",
            positive,
        )
    }
}

/// The largest `ApiConfig::max_body_bytes`: a purchase is a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enqueue_timeout: Duration::from_secs(2),
            max_body_bytes: 16 * 1024,
            store_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(1),
            event_cache_entries: 10_000,
            permit_ttl: Duration::from_secs(600),
        }
    }
}

/// The front door of an API: who may do what, and where waiting-room lines are kept.
pub struct FrontDoor {
    /// Sessions, logins, organizer tokens.
    pub access: Access,
    /// The waiting rooms' line log (the broker in production).
    pub line_log: Arc<dyn LineLog>,
}

/// What every handler shares. axum clones the state for every request, so it is one `Arc`.
pub struct ApiState<S, Q>(Arc<Shared<S, Q>>);

/// The shared parts behind [`ApiState`].
pub struct Shared<S, Q> {
    pub(super) store: Arc<S>,
    pub(super) queue: Arc<Q>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) access: Access,
    pub(super) line_log: Arc<dyn LineLog>,
    pub(super) lines: OpenLines,
    pub(super) config: ApiConfig,
    /// Events seen, with their shard (both immutable once the event exists).
    pub(super) events: Mutex<HashMap<EventId, (Arc<Event>, u8)>>,
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
    /// State over a store, a queue, metrics and the front door.
    pub fn new(
        store: Arc<S>,
        queue: Arc<Q>,
        metrics: Arc<Metrics>,
        front: FrontDoor,
        config: ApiConfig,
    ) -> Self {
        Self(Arc::new(Shared {
            store,
            queue,
            metrics,
            access: front.access,
            line_log: front.line_log,
            lines: OpenLines::default(),
            config,
            events: Mutex::new(HashMap::new()),
        }))
    }
}

impl<S: Store, Q: PurchaseQueue> ApiState<S, Q> {
    /// A store call under the API's store deadline (a slow store is a 503, never a hang).
    pub(super) async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, AppError> {
        let limit = self.config.store_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(AppError::Store(StoreError::Unavailable {
                reason: format!("no answer within {limit:?}"),
            })),
        }
    }

    /// An event and the shard that holds it, from the cache when seen before (only the
    /// event's immutable fields are used; its shard never changes).
    pub(super) async fn known_event(&self, id: EventId) -> Result<(Arc<Event>, u8), AppError> {
        let cached = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .map(|(e, shard)| (Arc::clone(e), *shard));
        if let Some(known) = cached {
            return Ok(known);
        }
        let event = Arc::new(
            self.bounded(self.store.event(id))
                .await?
                .ok_or(AppError::EventNotFound)?,
        );
        let shard = self.bounded(self.store.shard_of(id)).await?;
        let mut cache = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= self.config.event_cache_entries {
            cache.clear();
        }
        cache.insert(id, (Arc::clone(&event), shard));
        Ok((event, shard))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ApiConfig;

    #[test]
    fn the_defaults_validate_and_each_range_is_checked() {
        crate::testing::assert_each_refused(
            &ApiConfig::default(),
            ApiConfig::validate,
            &[
                ("ApiConfig::enqueue_timeout", |c| {
                    c.enqueue_timeout = Duration::ZERO
                }),
                ("ApiConfig::store_timeout", |c| {
                    c.store_timeout = Duration::ZERO
                }),
                ("ApiConfig::ready_timeout", |c| {
                    c.ready_timeout = Duration::ZERO
                }),
                ("ApiConfig::max_body_bytes", |c| c.max_body_bytes = 0),
                ("ApiConfig::max_body_bytes", |c| c.max_body_bytes = 1 << 30),
                ("ApiConfig::event_cache_entries", |c| {
                    c.event_cache_entries = 0
                }),
                ("ApiConfig::permit_ttl", |c| c.permit_ttl = Duration::ZERO),
            ],
        );
    }
}
