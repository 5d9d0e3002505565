//! The API autoscaler of `up --cluster`: adds an API process while the APIs stay busy and
//! removes one while they stay idle, registering and draining it through every balancer's admin
//! API, as the worker supervisor does for workers by queue lag.
//!
//! Every check it reads each balancer's `/status.json` and sums, per API, the requests in
//! flight and waiting in its queue over all balancers; the load is that sum per API. Above
//! `busy` for `sustain` checks in a row it starts one more API (up to the most), waits until its
//! `/healthz` answers 200, then adds it to every balancer (`POST /backends`). At or below
//! `busy / 8` for as long it removes the newest one it added: `DELETE /backends/ADDR` on every
//! balancer (each stops sending it requests and lets those in flight finish), waits until no
//! balancer lists it, and only then stops the process with SIGTERM, so no request fails.
//!
//! The APIs started with the cluster are never removed. A balancer that restarted (chaos) comes
//! back with those only: each check adds the others to every balancer that lacks them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use balancer::admin::status::Status;

use super::members::Members;
use super::plan::{FreePorts, Recipe};
use super::process::{Kind, Supervised};
use super::status::ClusterMetrics;
use crate::rush::client::Conn;
use crate::supervisor::{Scaler, ScalingConfig, Step};

/// How long one admin request to a balancer may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new API may take to answer `/healthz` 200 before it is given up.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// What the autoscaler works with.
#[derive(Debug)]
pub(super) struct ApiFleet {
    pub(super) members: Members,
    pub(super) recipe: Recipe,
    /// Every balancer's admin address.
    pub(super) admins: Vec<SocketAddr>,
    /// `min`: the APIs started with the cluster; thresholds in requests per API.
    pub(super) scaling: ScalingConfig,
    pub(super) drain_grace: Duration,
    pub(super) metrics: Arc<ClusterMetrics>,
}

/// The address an API serves on (every API's spec has one).
fn listen(p: &Supervised) -> Option<SocketAddr> {
    p.spec().listen
}

/// `GET /status.json` of one balancer.
async fn balancer_status(admin: SocketAddr) -> Option<Status> {
    let mut conn = Conn::new(admin, &admin.to_string(), ADMIN_TIMEOUT);
    let (status, body) = conn
        .send(Method::GET, "/status.json", &[], Bytes::new())
        .await
        .ok()?;
    if status != StatusCode::OK {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// One admin request to a balancer; its status, or `None` when it got no answer.
async fn admin_call(admin: SocketAddr, method: Method, path: &str, body: Bytes) -> Option<u16> {
    let mut conn = Conn::new(admin, &admin.to_string(), ADMIN_TIMEOUT);
    match conn.send(method, path, &[], body).await {
        Ok((status, _)) => Some(status.as_u16()),
        Err(e) => {
            tracing::warn!(%admin, error = %e, "balancer admin request failed");
            None
        }
    }
}

/// The load per API: requests in flight or queued at `apis`, summed over every balancer's
/// view, divided by their number (rounded up).
pub(super) fn load_per_api(views: &[Status], apis: &[SocketAddr]) -> u64 {
    if apis.is_empty() {
        return 0;
    }
    let total: u64 = views
        .iter()
        .flat_map(|v| &v.backends)
        .filter(|b| apis.iter().any(|a| a.to_string() == b.addr))
        .map(|b| b.in_flight + b.queue as u64)
        .sum();
    total.div_ceil(apis.len() as u64)
}

impl ApiFleet {
    fn apis(&self) -> Vec<Arc<Supervised>> {
        self.members
            .all()
            .into_iter()
            .filter(|p| p.spec().kind == Kind::Api)
            .collect()
    }

    /// Checks every `scaling.every` and acts, until `stop`.
    pub(super) async fn run(self, stop: CancellationToken) {
        let mut scaler = Scaler::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.scaling.every) => {}
            }
            let apis = self.apis();
            let addrs: Vec<SocketAddr> = apis.iter().filter_map(|p| listen(p)).collect();
            let mut views = Vec::with_capacity(self.admins.len());
            for admin in &self.admins {
                if let Some(view) = balancer_status(*admin).await {
                    self.register_missing(*admin, &view, &addrs).await;
                    views.push(view);
                }
            }
            if views.is_empty() {
                continue;
            }
            let load = load_per_api(&views, &addrs);
            match scaler.decide_load(&self.scaling, load, usize::MAX, apis.len()) {
                Step::Up => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = self.add(&apis) => {}
                    }
                }
                Step::Down => {
                    if let Some(newest) = apis.iter().max_by_key(|p| p.spec().index)
                        && newest.spec().index > self.scaling.min
                    {
                        self.remove(newest).await;
                    }
                }
                Step::Hold => {}
            }
            self.metrics.apis_now(self.apis().len(), load);
        }
    }

    /// Adds to the balancer at `admin` every API it does not list (it restarted with the APIs
    /// the cluster started with).
    async fn register_missing(&self, admin: SocketAddr, view: &Status, apis: &[SocketAddr]) {
        for api in apis {
            if !view.backends.iter().any(|b| b.addr == api.to_string()) {
                self.register(admin, *api).await;
            }
        }
    }

    async fn register(&self, admin: SocketAddr, api: SocketAddr) {
        let body = serde_json::json!({ "addr": api.to_string(), "weight": 1 }).to_string();
        match admin_call(admin, Method::POST, "/backends", Bytes::from(body)).await {
            Some(201 | 409) => {}
            Some(status) => tracing::warn!(%admin, %api, status, "balancer refused a new API"),
            None => {}
        }
    }

    /// Starts API `max index + 1`, and once it answers, puts it behind every balancer.
    async fn add(&self, apis: &[Arc<Supervised>]) {
        let n = apis.iter().map(|p| p.spec().index).max().unwrap_or(0) + 1;
        let mut ports = FreePorts::default();
        let (addr, metrics) = match (ports.take(), ports.take()) {
            (Ok(a), Ok(m)) => (a, m),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "no port for a new API");
                return;
            }
        };
        drop(ports);
        let p = Arc::new(Supervised::start(self.recipe.api(n, addr, metrics)));
        let name = p.spec().name();
        self.members.add(Arc::clone(&p));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(200) = plumbing::probe::status(addr, "/healthz", ADMIN_TIMEOUT).await {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(process = %name, "a new API never became ready; stopping it");
                self.members.remove(&name);
                p.stop(self.drain_grace).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for admin in &self.admins {
            self.register(*admin, addr).await;
        }
        tracing::info!(process = %name, %addr, "API added: the APIs were busy");
    }

    /// Drains `p` out of every balancer, then stops it.
    async fn remove(&self, p: &Arc<Supervised>) {
        let name = p.spec().name();
        let Some(addr) = listen(p) else { return };
        for admin in &self.admins {
            admin_call(
                *admin,
                Method::DELETE,
                &format!("/backends/{addr}"),
                Bytes::new(),
            )
            .await;
        }
        // Each balancer removes it once its requests in flight are done (its own
        // --drain-timeout at most); wait for that, a little longer than our own grace at most.
        let deadline = Instant::now() + self.drain_grace;
        loop {
            let mut listed = false;
            for admin in &self.admins {
                if let Some(view) = balancer_status(*admin).await {
                    listed |= view.backends.iter().any(|b| b.addr == addr.to_string());
                }
            }
            if !listed || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.members.remove(&name);
        p.stop(self.drain_grace).await;
        tracing::info!(process = %name, %addr, "API removed: the APIs were idle");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer::admin::status::BackendStatus;

    fn backend(addr: &str, in_flight: u64, queue: usize) -> BackendStatus {
        BackendStatus {
            addr: addr.into(),
            weight: 1,
            healthy: true,
            ejected: false,
            draining: false,
            available: true,
            in_flight,
            queue,
            requests_total: 0,
            errors_total: 0,
            rate_per_sec: 0.0,
            idle_connections: 0,
        }
    }

    fn view(backends: Vec<BackendStatus>) -> Status {
        Status {
            uptime_secs: 1,
            strategy: "least-conn".into(),
            panic: false,
            backends,
        }
    }

    #[test]
    fn the_load_is_in_flight_and_queued_per_api_over_every_balancer() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let views = [
            view(vec![
                backend("127.0.0.1:1", 10, 5),
                backend("127.0.0.1:2", 3, 0),
            ]),
            view(vec![
                backend("127.0.0.1:1", 1, 0),
                backend("127.0.0.1:9", 100, 100),
            ]),
        ];
        assert_eq!(
            load_per_api(&views, &[a, b]),
            10,
            "(15 + 3 + 1) / 2, rounded up"
        );
        assert_eq!(load_per_api(&views, &[]), 0);
        assert_eq!(load_per_api(&[], &[a]), 0);
    }
}
