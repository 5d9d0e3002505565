//! The balancer's Prometheus metrics (`balancer_*`), built on `prometheus-client`.
//!
//! A lower layer: the listeners, the proxy and each backend count into it, and the admin
//! listener only serves what [`Metrics::render`] writes. It knows backends by their address
//! (a label) and by the [`BackendGauges`] a scrape hands in, never as live objects.
//!
//! Labels are bounded: `backend` is one of the configured backend addresses (operators
//! control that set; removed backends' series are deleted), `class` is a status class, and
//! `reason`/`result` are small fixed vocabularies. No paths, client addresses or request ids.
//! Gauges that mirror live state (in flight, queue, health, idle pool) are refreshed from the
//! backends' atomics when scraped, so the request path pays nothing for them.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set with static keys and owned values.
pub type Labels = Vec<(&'static str, String)>;

/// Class labels in [`BackendMetrics::by_class`] order.
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Buckets from 0.5 ms to ~16 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

fn new_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Index into [`BackendMetrics::by_class`] (and [`CLASSES`]) for a status code.
pub fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Metric handles for one backend (shared with the registry's families).
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx, error (no response).
    pub by_class: [Counter; 6],
    /// Time from sending the request to response headers.
    pub latency: Histogram,
    /// Failed connection attempts.
    pub connect_errors: Counter,
    /// Passive ejections.
    pub ejections: Counter,
}

impl BackendMetrics {
    /// Handles registered nowhere (tests, tools).
    pub fn detached() -> Self {
        Self {
            by_class: Default::default(),
            latency: new_histogram(),
            connect_errors: Counter::default(),
            ejections: Counter::default(),
        }
    }
}

/// A backend's live state as its gauges show it, read when the metrics are scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendGauges {
    /// The backend (the `backend` label).
    pub addr: SocketAddr,
    /// Requests running on it.
    pub in_flight: u64,
    /// Requests waiting in its queue.
    pub queued: usize,
    /// It receives traffic (healthy, not ejected, not draining).
    pub is_up: bool,
    /// Idle pooled connections to it.
    pub idle_connections: usize,
}

/// Why the balancer answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Client over its rate.
    RateLimited,
    /// A backend queue was full.
    QueueFull,
    /// A request waited too long in a queue.
    QueueTimeout,
    /// No backend was available.
    NoBackend,
    /// Body over the limit.
    TooLarge,
    /// Request head over the limit (431, answered before the request is parsed).
    HeaderTooLarge,
    /// Malformed or ambiguous request (a malformed head too), or a body that stalled.
    BadRequest,
    /// The whole-request deadline passed.
    Timeout,
    /// The backend failed and no retry was possible.
    UpstreamError,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::QueueFull => "queue_full",
            Self::QueueTimeout => "queue_timeout",
            Self::NoBackend => "no_backend",
            Self::TooLarge => "too_large",
            Self::HeaderTooLarge => "header_too_large",
            Self::BadRequest => "bad_request",
            Self::Timeout => "timeout",
            Self::UpstreamError => "upstream_error",
        }
    }
}

/// Why a request that reached a backend could be sent again to another one (the `reason`
/// label of `balancer_replays_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayReason {
    /// A bodiless request of an idempotent method (`--retry-on-5xx`).
    Idempotent,
    /// A request carrying an `Idempotency-Key` header, its whole body kept
    /// (`--replay-idempotency-key`).
    IdempotencyKey,
}

impl ReplayReason {
    /// Every reason, in [`ReplayReason::index`] order.
    const ALL: [Self; 2] = [Self::Idempotent, Self::IdempotencyKey];

    fn index(self) -> usize {
        match self {
            Self::Idempotent => 0,
            Self::IdempotencyKey => 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Idempotent => "idempotent",
            Self::IdempotencyKey => "idempotency_key",
        }
    }
}

/// Every metric family, registered in one [`Registry`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    request_duration: Histogram,
    upstream_requests: Family<Labels, Counter>,
    upstream_duration: Family<Labels, Histogram, fn() -> Histogram>,
    upstream_in_flight: Family<Labels, Gauge>,
    queue_length: Family<Labels, Gauge>,
    backend_up: Family<Labels, Gauge>,
    pool_idle: Family<Labels, Gauge>,
    connect_errors: Family<Labels, Counter>,
    ejections: Family<Labels, Counter>,
    retries: Counter,
    /// By [`ReplayReason::index`]: created up front, so a replay looks up no label set.
    replays: [Counter; 2],
    panic_requests: Counter,
    rejected: Family<Labels, Counter>,
    connections_open: Gauge,
    connections_total: Counter,
    tls_handshakes: Family<Labels, Counter>,
    by_class: [Counter; 6],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "balancer_requests",
            "Client requests answered, by status class",
            requests.clone(),
        );
        let request_duration = new_histogram();
        registry.register(
            "balancer_request_duration_seconds",
            "Time from request arrival to response headers",
            request_duration.clone(),
        );
        let upstream_requests = Family::<Labels, Counter>::default();
        registry.register(
            "balancer_upstream_requests",
            "Requests sent to backends, by backend and response class",
            upstream_requests.clone(),
        );
        let upstream_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(new_histogram);
        registry.register(
            "balancer_upstream_duration_seconds",
            "Time from sending a request to a backend to its response headers",
            upstream_duration.clone(),
        );
        let upstream_in_flight = Family::<Labels, Gauge>::default();
        registry.register(
            "balancer_upstream_in_flight_requests",
            "Requests running on each backend",
            upstream_in_flight.clone(),
        );
        let queue_length = Family::<Labels, Gauge>::default();
        registry.register(
            "balancer_queue_length_requests",
            "Requests waiting in each backend's FIFO queue",
            queue_length.clone(),
        );
        let backend_up = Family::<Labels, Gauge>::default();
        registry.register(
            "balancer_backend_up",
            "1 when a backend receives traffic (healthy, not ejected, not draining)",
            backend_up.clone(),
        );
        let pool_idle = Family::<Labels, Gauge>::default();
        registry.register(
            "balancer_pool_idle_connections",
            "Idle pooled connections per backend",
            pool_idle.clone(),
        );
        let connect_errors = Family::<Labels, Counter>::default();
        registry.register(
            "balancer_upstream_connect_errors",
            "Failed connection attempts per backend",
            connect_errors.clone(),
        );
        let ejections = Family::<Labels, Counter>::default();
        registry.register(
            "balancer_backend_ejections",
            "Passive ejections per backend",
            ejections.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "balancer_retries",
            "Requests retried on another backend",
            retries.clone(),
        );
        let replays_family = Family::<Labels, Counter>::default();
        registry.register(
            "balancer_replays",
            "Requests sent again to another backend after one had received them, by why that \
             was safe (a subset of balancer_retries_total)",
            replays_family.clone(),
        );
        let replays = ReplayReason::ALL.map(|reason| {
            replays_family.get_or_create_owned(&vec![("reason", reason.label().to_owned())])
        });
        let panic_requests = Counter::default();
        registry.register(
            "balancer_panic_requests",
            "Requests sent while every backend was down or ejected (tried anyway)",
            panic_requests.clone(),
        );
        let rejected = Family::<Labels, Counter>::default();
        registry.register(
            "balancer_rejected_requests",
            "Requests the balancer answered itself, by reason",
            rejected.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "balancer_downstream_connections",
            "Open client connections",
            connections_open.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "balancer_downstream_connections_accepted",
            "Client connections accepted",
            connections_total.clone(),
        );
        let tls_handshakes = Family::<Labels, Counter>::default();
        registry.register(
            "balancer_tls_handshakes",
            "TLS handshakes by result",
            tls_handshakes.clone(),
        );
        let by_class = std::array::from_fn(|i| {
            requests.get_or_create_owned(&vec![("class", CLASSES[i].to_owned())])
        });
        Self {
            registry,
            request_duration,
            upstream_requests,
            upstream_duration,
            upstream_in_flight,
            queue_length,
            backend_up,
            pool_idle,
            connect_errors,
            ejections,
            retries,
            replays,
            panic_requests,
            rejected,
            connections_open,
            connections_total,
            tls_handshakes,
            by_class,
        }
    }

    /// Handles for a backend's own counters.
    pub fn for_backend(&self, addr: &str) -> BackendMetrics {
        let b = || vec![("backend", addr.to_owned())];
        BackendMetrics {
            by_class: std::array::from_fn(|i| {
                self.upstream_requests.get_or_create_owned(&vec![
                    ("backend", addr.to_owned()),
                    ("class", CLASSES[i].to_owned()),
                ])
            }),
            latency: self.upstream_duration.get_or_create_owned(&b()),
            connect_errors: self.connect_errors.get_or_create_owned(&b()),
            ejections: self.ejections.get_or_create_owned(&b()),
        }
    }

    /// Deletes a removed backend's series.
    pub fn forget_backend(&self, addr: &str) {
        let b = vec![("backend", addr.to_owned())];
        for class in CLASSES {
            self.upstream_requests.remove(&vec![
                ("backend", addr.to_owned()),
                ("class", class.to_owned()),
            ]);
        }
        self.upstream_duration.remove(&b);
        self.upstream_in_flight.remove(&b);
        self.queue_length.remove(&b);
        self.backend_up.remove(&b);
        self.pool_idle.remove(&b);
        self.connect_errors.remove(&b);
        self.ejections.remove(&b);
    }

    /// Counts a response to a client.
    pub fn observe_request(&self, status: u16, elapsed: Duration) {
        if let Some(c) = self.by_class.get(class_index(status)) {
            c.inc();
        }
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a request the balancer answered itself.
    pub fn reject(&self, why: Rejection) {
        self.rejected
            .get_or_create(&vec![("reason", why.label().to_owned())])
            .inc();
    }

    /// Counts a retry.
    pub fn retry(&self) {
        self.retries.inc();
    }

    /// Counts a replay: a retry of a request a backend had already received.
    pub fn replay(&self, reason: ReplayReason) {
        if let Some(c) = self.replays.get(reason.index()) {
            c.inc();
        }
    }

    /// A request went to a backend picked while every backend was out.
    pub fn panic_request(&self) {
        self.panic_requests.inc();
    }

    /// A client connection opened.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
        self.connections_total.inc();
    }

    /// A client connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// Counts a TLS handshake.
    pub fn tls_handshake(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_handshakes
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// Refreshes the state gauges from `backends` and renders the text exposition.
    pub fn render(&self, backends: impl IntoIterator<Item = BackendGauges>) -> String {
        for b in backends {
            let l = vec![("backend", b.addr.to_string())];
            self.upstream_in_flight
                .get_or_create(&l)
                .set(i64::try_from(b.in_flight).unwrap_or(i64::MAX));
            self.queue_length
                .get_or_create(&l)
                .set(i64::try_from(b.queued).unwrap_or(i64::MAX));
            self.backend_up.get_or_create(&l).set(i64::from(b.is_up));
            self.pool_idle
                .get_or_create(&l)
                .set(i64::try_from(b.idle_connections).unwrap_or(i64::MAX));
        }
        plumbing::metrics::encode(&self.registry).unwrap_or_else(|error| {
            tracing::error!(%error, "encoding metrics failed");
            String::new()
        })
    }
}
