//! The state every task shares: the live config, the backend set, metrics, the rate limiter,
//! the retry budget, task trackers and cancellation tokens. Backends are created, added and
//! drained here so the admin API and config reloads go through one path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BackendSpec, Config};
use crate::limit::concurrency::ConcurrencyGate;
use crate::limit::rate::{DEFAULT_MAX_CLIENTS, RateLimiter};
use crate::limit::retry::RetryBudget;
use crate::metrics::Metrics;
use crate::upstream::health::health_loop;
use crate::upstream::{Backend, Backends};

/// How often request rates are sampled and idle pools swept.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// Errors of backend management.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Adding a backend that is already there.
    #[error("backend {0} already exists")]
    Exists(SocketAddr),
    /// Removing a backend that is not there.
    #[error("backend {0} not found")]
    NotFound(SocketAddr),
}

/// The state of one running balancer, shared by every task: the listeners' connections,
/// the request path, the background loops and the admin listener.
pub struct BalancerState {
    /// The live config (swapped on reload; the health loops hold it too).
    pub config: Arc<ArcSwap<Config>>,
    /// The backend set.
    pub backends: Backends,
    /// Metric families.
    pub metrics: Metrics,
    /// Per-client token buckets.
    pub rate: RateLimiter,
    /// Retry budget.
    pub budget: RetryBudget,
    /// TLS acceptor (swapped on certificate reload); `None` for plain HTTP.
    pub tls: ArcSwapOption<TlsAcceptor>,
    /// Client connections and tunnels: what a drain waits for.
    pub conns: TaskTracker,
    /// Background work: health loops, sampler, upstream connections, admin.
    pub background: TaskTracker,
    /// Cancelled to stop accepting and start draining.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain is over: everything still running stops.
    pub hard_stop: CancellationToken,
    /// Worker runtimes (pools per backend).
    pub workers: usize,
    /// Process start, for the status page.
    pub started: Instant,
}

impl BalancerState {
    /// Builds the state for `config` (no tasks are started).
    pub fn new(config: Config, tls: Option<TlsAcceptor>) -> Arc<Self> {
        let metrics = Metrics::new();
        let hard_stop = CancellationToken::new();
        let workers = config.workers;
        let budget = RetryBudget::new(config.retry.budget_ratio, 10, 100);
        let backends = config
            .backends
            .iter()
            .map(|spec| Arc::new(make_backend(*spec, &config, &metrics, &hard_stop)))
            .collect();
        let backends = Backends::new(backends, config.strategy, config.seed);
        Arc::new(Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            backends,
            metrics,
            rate: RateLimiter::new(DEFAULT_MAX_CLIENTS),
            budget,
            tls: ArcSwapOption::from(tls.map(Arc::new)),
            conns: TaskTracker::new(),
            background: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            hard_stop,
            workers,
            started: Instant::now(),
        })
    }

    /// Starts the health loops of the initial backends and the sampler.
    pub fn start_background(self: &Arc<Self>) {
        for b in self.backends.snapshot() {
            self.background
                .spawn(health_loop(b, Arc::clone(&self.config)));
        }
        let me = Arc::clone(self);
        self.background.spawn(async move { me.sampler().await });
    }

    async fn sampler(self: Arc<Self>) {
        let mut last: std::collections::HashMap<SocketAddr, (u64, Instant)> =
            std::collections::HashMap::new();
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.hard_stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let idle = self.config.load().timeouts.idle;
            let now = Instant::now();
            let set = self.backends.snapshot();
            for b in &set {
                let total = b.requests_total();
                if let Some((prev, at)) = last.get(&b.addr()) {
                    let secs = now.duration_since(*at).as_secs_f64();
                    if secs > 0.0 {
                        b.set_rate_per_sec(total.saturating_sub(*prev) as f64 / secs);
                    }
                }
                last.insert(b.addr(), (total, now));
                b.sweep_pools(idle);
            }
            last.retain(|addr, _| set.iter().any(|b| b.addr() == *addr));
        }
    }

    /// The metrics text (what the admin `/metrics` serves), the backends' gauges refreshed.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .render(self.backends.snapshot().iter().map(|b| b.gauges()))
    }

    /// Adds a backend and starts checking it at once; it gets traffic after the first
    /// passing check.
    pub fn add_backend(self: &Arc<Self>, spec: BackendSpec) -> Result<(), BackendError> {
        let cfg = self.config.load_full();
        let backend =
            Arc::new(make_backend(spec, &cfg, &self.metrics, &self.hard_stop).start_pending());
        let added = self.backends.update(None, |list| {
            if list.iter().any(|b| b.addr() == spec.addr) {
                false
            } else {
                list.push(Arc::clone(&backend));
                true
            }
        });
        if !added {
            return Err(BackendError::Exists(spec.addr));
        }
        tracing::info!(backend = %spec.addr, weight = spec.weight,
            "backend added; serving after its first passing health check");
        self.background
            .spawn(health_loop(backend, Arc::clone(&self.config)));
        Ok(())
    }

    /// Stops sending new requests to `addr`, waits for its in-flight requests (at most the
    /// drain timeout) in a background task, then removes it.
    pub fn drain_backend(self: &Arc<Self>, addr: SocketAddr) -> Result<(), BackendError> {
        let backend = self
            .backends
            .load()
            .find(addr)
            .cloned()
            .ok_or(BackendError::NotFound(addr))?;
        if backend.is_draining() {
            return Ok(());
        }
        backend.start_draining();
        tracing::info!(backend = %addr, "backend draining");
        let me = Arc::clone(self);
        self.background.spawn(async move {
            let deadline = tokio::time::Instant::now() + me.config.load().timeouts.drain;
            // Polling a counter here is fine: it is one background task per removal, and
            // the request path stays free of any notification cost.
            while backend.in_flight_now() > 0 || backend.gate().queue_len() > 0 {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(backend = %addr, in_flight = backend.in_flight_now(),
                        "drain timeout: removing backend with requests in flight");
                    break;
                }
                tokio::select! {
                    _ = me.hard_stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            me.remove_now(addr);
        });
        Ok(())
    }

    fn remove_now(&self, addr: SocketAddr) {
        let removed = self.backends.update(None, |list| {
            let pos = list.iter().position(|b| b.addr() == addr)?;
            Some(list.remove(pos))
        });
        if let Some(b) = removed {
            b.cancel_token().cancel();
            b.clear_pools();
            self.metrics.forget_backend(&addr.to_string());
            tracing::info!(backend = %addr, "backend removed");
        }
    }

    /// Applies a reloaded config: backends added, drained or reweighted, strategy and live
    /// settings swapped. Listen addresses, workers and TLS paths need a restart.
    pub fn apply_config(self: &Arc<Self>, new: Config) {
        let old = self.config.load_full();
        if new.listen != old.listen
            || new.admin_listen != old.admin_listen
            || new.workers != old.workers
        {
            tracing::warn!(
                "listen addresses and workers change only on restart; keeping the old ones"
            );
        }
        let mut effective = new.clone();
        effective.listen = old.listen;
        effective.admin_listen = old.admin_listen;
        effective.workers = old.workers;
        self.config.store(Arc::new(effective));
        let current = self.backends.snapshot();
        let limits_changed = new.limits.max_in_flight_per_backend
            != old.limits.max_in_flight_per_backend
            || new.limits.max_queue_per_backend != old.limits.max_queue_per_backend;
        if limits_changed {
            for b in &current {
                b.set_gate(ConcurrencyGate::new(
                    new.limits.max_in_flight_per_backend,
                    new.limits.max_queue_per_backend,
                ));
            }
        }
        for spec in &new.backends {
            match current.iter().find(|b| b.addr() == spec.addr) {
                Some(b) => b.set_weight(spec.weight),
                None => {
                    if let Err(error) = self.add_backend(*spec) {
                        tracing::warn!(%error, "reload could not add backend");
                    }
                }
            }
        }
        for b in &current {
            if !new.backends.iter().any(|s| s.addr == b.addr())
                && let Err(error) = self.drain_backend(b.addr())
            {
                tracing::warn!(%error, "reload could not drain backend");
            }
        }
        if new.strategy != old.strategy {
            self.backends.update(Some(new.strategy), |_| ());
        }
        tracing::info!(backends = new.backends.len(), "config reloaded");
    }
}

impl std::fmt::Debug for BalancerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerState")
            .field("backends", &self.backends)
            .field("tls", &self.tls.load().is_some())
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

fn make_backend(
    spec: BackendSpec,
    config: &Config,
    metrics: &Metrics,
    hard_stop: &CancellationToken,
) -> Backend {
    Backend::new(
        spec,
        ConcurrencyGate::new(
            config.limits.max_in_flight_per_backend,
            config.limits.max_queue_per_backend,
        ),
        config.workers,
        config.pool_max_idle,
        metrics.for_backend(&spec.addr.to_string()),
        hard_stop.child_token(),
    )
}
