//! One backend: its address and weight, its live state (health, ejection, draining, load),
//! its connection pools (one per worker runtime) and its metric handles.
//!
//! All state is atomics so the request path never locks. Availability is the conjunction of
//! three independent facts: the active checker says up, passive ejection has expired, and the
//! backend is not draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::BackendSpec;
use crate::limit::concurrency::{Admission, ConcurrencyGate};
use crate::metrics::{BackendGauges, BackendMetrics, class_index};
use crate::select::Candidate;

use super::conn::Connection;
use super::pool::Pool;

/// A backend and its live state.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    weight: AtomicU32,
    in_flight: AtomicU64,
    healthy: AtomicBool,
    pending: AtomicBool,
    draining: AtomicBool,
    epoch: Instant,
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    requests: AtomicU64,
    errors: AtomicU64,
    rate_milli: AtomicU64,
    gate: ArcSwap<ConcurrencyGate>,
    /// The gate caps concurrency (`--max-in-flight` > 0); without a cap every backend always
    /// has capacity and the selector skips loading the gate.
    capped: AtomicBool,
    pools: Box<[Pool]>,
    metrics: BackendMetrics,
    cancel: CancellationToken,
}

impl Backend {
    /// A backend that starts healthy (traffic flows at once; the checker takes it down if not).
    pub fn new(
        spec: BackendSpec,
        gate: ConcurrencyGate,
        workers: usize,
        pool_max_idle: usize,
        metrics: BackendMetrics,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            addr: spec.addr,
            weight: AtomicU32::new(spec.weight.max(1)),
            in_flight: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            pending: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            epoch: Instant::now(),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rate_milli: AtomicU64::new(0),
            capped: AtomicBool::new(gate.max_in_flight() > 0),
            gate: ArcSwap::from_pointee(gate),
            pools: (0..workers.max(1))
                .map(|_| Pool::new(pool_max_idle))
                .collect(),
            metrics,
            cancel,
        }
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Current weight.
    pub fn weight_now(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Changes the weight (config reload, admin API).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// Requests running on it now.
    pub fn in_flight_now(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The active checker's verdict.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records the active checker's verdict; returns whether it changed.
    pub fn set_healthy(&self, up: bool) -> bool {
        let changed = self.healthy.swap(up, Ordering::AcqRel) != up;
        if up && changed {
            // Coming back up clears any passive ejection: the checker has just seen it serve.
            self.end_ejection();
        }
        changed
    }

    /// Ends a passive ejection and the failure streak behind it (a passing active check: the
    /// backend serves again, as Envoy's `successful_active_health_check_uneject_host`).
    /// Returns whether it was ejected.
    pub fn end_ejection(&self) -> bool {
        let was = self.is_ejected();
        self.ejected_until_ms.store(0, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Release);
        was
    }

    /// Being drained for removal.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts draining: no new requests.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Passively ejected right now. Reads the clock only while an ejection is recorded; an
    /// expired one is cleared so the selector's checks stay clock-free.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if until > self.now_ms() {
            return true;
        }
        // Lost races are harmless: a newer ejection stays (the exchange fails).
        let _ =
            self.ejected_until_ms
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
        false
    }

    /// May receive new requests.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_draining() && !self.is_ejected()
    }

    /// Records a failure (connect error or 5xx); ejects after `threshold` in a row.
    /// Returns true when this call ejected the backend.
    pub fn record_failure(&self, threshold: u32, eject_for: Duration) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if threshold == 0 || n < threshold || self.is_ejected() {
            return false;
        }
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(eject_for.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until_ms.store(until, Ordering::Release);
        self.metrics.ejections.inc();
        true
    }

    /// Records a success: the failure streak ends.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Release);
        }
    }

    /// Counts a response (or an error, `None`) for metrics and the status page.
    pub fn record_response(&self, status: Option<u16>, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let idx = status.map_or(5, class_index);
        if let Some(c) = self.metrics.by_class.get(idx) {
            c.inc();
        }
        if status.is_some() {
            self.metrics.latency.observe(latency.as_secs_f64());
        }
    }

    /// Counts a failed connection attempt.
    pub fn record_connect_error(&self) {
        self.metrics.connect_errors.inc();
    }

    /// Requests sent so far.
    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failures so far (connect errors, 5xx, broken exchanges).
    pub fn errors_total(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Requests per second over the last sampling period.
    pub fn rate_per_sec(&self) -> f64 {
        // Stored in thousandths; precision beyond that is noise on a status page.
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Stores the sampled request rate.
    pub fn set_rate_per_sec(&self, rate: f64) {
        let milli = (rate.max(0.0) * 1000.0).min(u64::MAX as f64) as u64;
        self.rate_milli.store(milli, Ordering::Relaxed);
    }

    /// The concurrency gate and its queue (a snapshot: a reload may swap in a new one).
    pub fn gate(&self) -> arc_swap::Guard<Arc<ConcurrencyGate>> {
        self.gate.load()
    }

    /// The pool of worker `worker` (worker indices wrap).
    pub fn pool(&self, worker: usize) -> &Pool {
        let n = self.pools.len().max(1);
        // pools is never empty: `new` builds at least one.
        &self.pools[worker % n]
    }

    /// Replaces the gate (reloaded limits). Requests already admitted or waiting finish
    /// under the old gate; new ones use the new limits.
    pub fn set_gate(&self, gate: ConcurrencyGate) {
        self.capped
            .store(gate.max_in_flight() > 0, Ordering::Release);
        self.gate.store(Arc::new(gate));
    }

    /// A request sent now would start at once (no cap, or a free slot and nobody waiting).
    pub fn has_capacity(&self) -> bool {
        !self.capped.load(Ordering::Acquire) || self.gate().has_capacity()
    }

    /// Its gauges as a metrics scrape shows them.
    pub fn gauges(&self) -> BackendGauges {
        BackendGauges {
            addr: self.addr,
            in_flight: self.in_flight_now(),
            queued: self.gate().queue_len(),
            is_up: self.is_available(),
            idle_connections: self.idle_connections(),
        }
    }

    /// Idle pooled connections over all workers.
    pub fn idle_connections(&self) -> usize {
        self.pools.iter().map(Pool::idle_len).sum()
    }

    /// Drops expired idle connections in every pool.
    pub fn sweep_pools(&self, idle_timeout: Duration) {
        for p in self.pools.iter() {
            p.sweep(idle_timeout);
        }
    }

    /// Drops every idle connection (removal, shutdown).
    pub fn clear_pools(&self) {
        for p in self.pools.iter() {
            p.clear();
        }
    }

    /// Marks a backend added at run time as not yet serving: it gets traffic only after
    /// its first passing health check (an autoscaled instance may still be starting).
    pub fn start_pending(self) -> Self {
        self.healthy.store(false, Ordering::Release);
        self.pending.store(true, Ordering::Release);
        self
    }

    /// Added at run time and not yet checked.
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The first check passed: a pending backend starts serving.
    pub fn clear_pending(&self) {
        self.pending.store(false, Ordering::Release);
    }

    /// Cancelled when the backend is removed; its health loop watches it.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }
}

impl Candidate for Arc<Backend> {
    fn weight(&self) -> u32 {
        self.weight_now()
    }
    fn in_flight(&self) -> u64 {
        self.in_flight_now()
    }
}

/// One request's hold on a backend: counted in flight from creation until drop; on
/// [`Exchange::complete`] a reusable connection goes back to the pool.
#[derive(Debug)]
pub struct Exchange {
    backend: Arc<Backend>,
    worker: usize,
    _admission: Admission,
}

impl Exchange {
    /// Starts an exchange on `backend` (counts it in flight).
    pub fn begin(backend: Arc<Backend>, worker: usize, admission: Admission) -> Self {
        backend.in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            backend,
            worker,
            _admission: admission,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The response ended cleanly: pool the connection (when it may be reused), release
    /// the slot.
    pub fn complete(self, conn: Option<Connection>) {
        if let Some(conn) = conn {
            self.backend.pool(self.worker).put(conn);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
