//! The `ticket_*` metric families. Built once (in `main`, or a test) against a registry that is
//! passed down; no globals. Labels are bounded: routes are matched route templates, statuses are
//! HTTP codes, outcomes are the fixed decision names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/events/{id}`), or `unmatched`.
    pub route: &'static str,
    /// The HTTP status code.
    pub status: u16,
}

/// Labels naming a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template, or `unmatched`.
    pub route: &'static str,
}

/// Labels naming a decision outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `confirmed`, `sold_out`, `limit_exceeded`, `failed` or `redelivered`.
    pub outcome: &'static str,
}

/// Labels naming a shard of a sharded store (bounded: at most
/// [`crate::domain::MAX_SHARDS`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ShardLabels {
    /// The shard's index: its place in the list of database URLs.
    pub shard: u8,
}

/// Labels of a refused credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `session`, `login` or `organizer`.
    pub credential: &'static str,
    /// Why: `missing`, `malformed`, `unknown_key`, `bad_signature`, `expired`, `wrong_code`,
    /// `too_many_attempts`, `not_organizer` or `organizer_disabled`.
    pub reason: &'static str,
}

/// Labels of a step's result (a login's, a permit's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    /// Logins: `code_sent`, `send_failed` or `session_issued`; permits: `issued` or `used`.
    pub result: &'static str,
}

/// Labels of a change's direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `up` or `down`.
    pub direction: &'static str,
}

/// Labels of a refusal's reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The refusal's error code (e.g. `bad_permit`, `permit_expired`, `not_admitted`).
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Every metric the API and the workers export.
#[derive(Debug)]
pub struct Metrics {
    /// `ticket_http_requests_total{route,status}`.
    pub http_requests: Family<RequestLabels, Counter>,
    /// `ticket_http_request_duration_seconds{route}`.
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `ticket_purchases_accepted_total`: 202s answered.
    pub purchases_accepted: Counter,
    /// `ticket_purchases_deduplicated_total`: 202s for a purchase already queued.
    pub purchases_deduplicated: Counter,
    /// `ticket_queue_enqueue_duration_seconds`: time to a durable enqueue.
    pub enqueue_duration: Histogram,
    /// `ticket_queue_enqueue_failures_total`: enqueues that failed or timed out (each a 503).
    pub enqueue_failures: Counter,
    /// `ticket_worker_decisions_total{outcome}`.
    pub decisions: Family<OutcomeLabels, Counter>,
    /// `ticket_worker_batch_duration_seconds`: one store transaction deciding a batch.
    pub batch_duration: Histogram,
    /// `ticket_worker_batch_jobs`: jobs per decided batch.
    pub batch_jobs: Histogram,
    /// `ticket_worker_nacks_total`: batches given back after a store error.
    pub nacks: Counter,
    /// `ticket_worker_store_retries_total`: store calls (a batch's decision, a dead letter's
    /// `failed`) tried again in place after a transient store error (no delivery attempt spent).
    pub store_retries: Counter,
    /// `ticket_worker_dead_letters_total`: purchases marked failed from the dead-letter lane.
    pub dead_letters: Counter,
    /// `ticket_worker_busy`: workers inside a batch right now.
    pub workers_busy: Gauge,
    /// `ticket_access_refused_total{credential,reason}`: requests refused for their credential.
    pub access_refused: Family<RefusalLabels, Counter>,
    /// `ticket_logins_total{result}`: login codes sent or not, sessions issued.
    pub logins: Family<ResultLabels, Counter>,
    /// `ticket_line_joins_total`: joins of waiting-room lines.
    pub line_joins: Counter,
    /// `ticket_line_permits_total{result}`: permits issued, and used by a purchase.
    pub line_permits: Family<ResultLabels, Counter>,
    /// `ticket_line_refused_total{reason}`: line requests and purchases refused for a token or
    /// a permit.
    pub line_refused: Family<ReasonLabels, Counter>,
    /// `ticket_line_wait_seconds`: from joining (or the opening) to the permit.
    pub line_wait: Histogram,
    /// `ticket_line_waiting`: visitors in line not yet admitted, as this instance saw them.
    pub line_waiting: Gauge,
    /// `ticket_line_admitted`: places admitted, over the open lines this instance serves.
    pub line_admitted: Gauge,
    /// `ticket_line_admit_per_s`: the admission rate now, over the open lines this instance
    /// serves.
    pub line_admit_per_s: Gauge,
    /// `ticket_line_pace_changes_total{direction}`: auto-paced rates this instance raised
    /// (`up`) or cut (`down`).
    pub line_pace_changes: Family<DirectionLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            purchases_accepted: Counter::default(),
            purchases_deduplicated: Counter::default(),
            enqueue_duration: latency_histogram(),
            enqueue_failures: Counter::default(),
            decisions: Family::default(),
            batch_duration: latency_histogram(),
            batch_jobs: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            nacks: Counter::default(),
            store_retries: Counter::default(),
            dead_letters: Counter::default(),
            workers_busy: Gauge::default(),
            access_refused: Family::default(),
            logins: Family::default(),
            line_joins: Counter::default(),
            line_permits: Family::default(),
            line_refused: Family::default(),
            // 1 s … ~9 h
            line_wait: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            line_waiting: Gauge::default(),
            line_admitted: Gauge::default(),
            line_admit_per_s: Gauge::default(),
            line_pace_changes: Family::default(),
        };
        registry.register(
            "ticket_http_requests",
            "HTTP requests answered, by route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "ticket_http_request_duration_seconds",
            "HTTP request latency, by route",
            m.http_duration.clone(),
        );
        registry.register(
            "ticket_purchases_accepted",
            "Purchases durably queued and answered 202",
            m.purchases_accepted.clone(),
        );
        registry.register(
            "ticket_purchases_deduplicated",
            "202s for a purchase that was already queued (retried Idempotency-Key)",
            m.purchases_deduplicated.clone(),
        );
        registry.register(
            "ticket_queue_enqueue_duration_seconds",
            "Time until the queue acknowledged a purchase job durably",
            m.enqueue_duration.clone(),
        );
        registry.register(
            "ticket_queue_enqueue_failures",
            "Enqueues that failed or timed out (answered 503)",
            m.enqueue_failures.clone(),
        );
        registry.register(
            "ticket_worker_decisions",
            "Purchase decisions, by outcome",
            m.decisions.clone(),
        );
        registry.register(
            "ticket_worker_batch_duration_seconds",
            "Store transaction time per decided batch",
            m.batch_duration.clone(),
        );
        registry.register(
            "ticket_worker_batch_jobs",
            "Jobs per decided batch",
            m.batch_jobs.clone(),
        );
        registry.register(
            "ticket_worker_nacks",
            "Batches given back to the queue after a store error",
            m.nacks.clone(),
        );
        registry.register(
            "ticket_worker_store_retries",
            "Store calls (a batch's decision, a dead letter's failed mark) tried again in place after a transient store error",
            m.store_retries.clone(),
        );
        registry.register(
            "ticket_worker_dead_letters",
            "Dead-lettered purchases marked failed",
            m.dead_letters.clone(),
        );
        registry.register(
            "ticket_worker_busy",
            "Workers deciding a batch right now",
            m.workers_busy.clone(),
        );
        registry.register(
            "ticket_access_refused",
            "Requests refused for their credential (buyer session, login, organizer token), by reason",
            m.access_refused.clone(),
        );
        registry.register(
            "ticket_logins",
            "Login codes sent (or not) and buyer sessions issued",
            m.logins.clone(),
        );
        registry.register(
            "ticket_line_joins",
            "Joins of waiting-room lines",
            m.line_joins.clone(),
        );
        registry.register(
            "ticket_line_permits",
            "Permits to buy: issued to admitted visitors, used by a purchase",
            m.line_permits.clone(),
        );
        registry.register(
            "ticket_line_refused",
            "Line requests and purchases refused for their queue token or permit, by reason",
            m.line_refused.clone(),
        );
        registry.register(
            "ticket_line_wait_seconds",
            "Time in line: from joining (or the line's opening) to the permit",
            m.line_wait.clone(),
        );
        registry.register(
            "ticket_line_waiting",
            "Visitors in line not yet admitted, as this instance saw them (take the max over instances)",
            m.line_waiting.clone(),
        );
        registry.register(
            "ticket_line_admitted",
            "Places admitted, over the open lines this instance serves (take the max over instances; its rate is admissions a second)",
            m.line_admitted.clone(),
        );
        registry.register(
            "ticket_line_admit_per_s",
            "The admission rate now, over the open lines this instance serves (take the max over instances)",
            m.line_admit_per_s.clone(),
        );
        registry.register(
            "ticket_line_pace_changes",
            "Auto-paced admission rates this instance changed, by direction (up: the workers keep up; down: they fall behind)",
            m.line_pace_changes.clone(),
        );
        // Both directions from the start: a rate() over a series that appears late misses its
        // first change.
        for direction in ["up", "down"] {
            m.line_pace_changes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(0);
        }
        m
    }

    /// Metrics registered in a throwaway registry (for tests and tools that export nothing).
    pub fn unregistered() -> Self {
        Self::new(&mut Registry::default())
    }
}

/// A sharded store's metrics, per shard. The store owns them (it is opened before any
/// registry exists) and registers them where it is asked to
/// ([`crate::store::Store::register_metrics`]): the workers' registry.
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    /// `ticket_store_shard_decisions_total{shard}`: decisions a shard's transactions returned
    /// (new and read back), so a shard that stopped deciding shows as a flat line.
    pub decisions: Family<ShardLabels, Counter>,
    /// `ticket_store_shard_errors_total{shard}`: a shard's part of a batch that failed (each
    /// fails the whole batch, which is tried again).
    pub errors: Family<ShardLabels, Counter>,
}

impl ShardMetrics {
    /// The metrics of `shards` shards, every series present from the start (at 0).
    pub fn new(shards: usize) -> Self {
        let m = Self::default();
        for shard in (0..shards).filter_map(|s| u8::try_from(s).ok()) {
            let labels = ShardLabels { shard };
            m.decisions.get_or_create(&labels).inc_by(0);
            m.errors.get_or_create(&labels).inc_by(0);
        }
        m
    }

    /// Registers the families in `registry` (they stay shared with the store).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ticket_store_shard_decisions",
            "Purchase decisions returned by each shard's transactions (new and read back)",
            self.decisions.clone(),
        );
        registry.register(
            "ticket_store_shard_errors",
            "Failed shard transactions while deciding a batch (the whole batch is tried again)",
            self.errors.clone(),
        );
    }
}
