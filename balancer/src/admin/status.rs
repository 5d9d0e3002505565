//! The status views: a JSON document and an HTML page (a table of backends that reloads
//! itself every two seconds) built from the same snapshot.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Strategy;
use crate::state::BalancerState;

/// One backend's row.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct BackendStatus {
    /// Address.
    pub addr: String,
    /// Weight.
    pub weight: u32,
    /// Active health checker's verdict.
    pub healthy: bool,
    /// Passively ejected now.
    pub ejected: bool,
    /// Draining for removal.
    pub draining: bool,
    /// Receives new requests.
    pub available: bool,
    /// Requests running on it.
    pub in_flight: u64,
    /// Requests waiting in its queue.
    pub queue: usize,
    /// Requests sent so far.
    pub requests_total: u64,
    /// Failures so far.
    pub errors_total: u64,
    /// Requests per second, last second.
    pub rate_per_sec: f64,
    /// Idle pooled connections.
    pub idle_connections: usize,
}

/// The whole status document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Status {
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Selection strategy.
    pub strategy: String,
    /// Every backend is down or ejected: requests go to those not draining anyway.
    pub panic: bool,
    /// Backends in configuration order.
    pub backends: Vec<BackendStatus>,
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::RoundRobin => "round-robin",
        Strategy::LeastConn => "least-conn",
        Strategy::P2c => "p2c",
    }
}

/// Takes a snapshot.
pub fn snapshot(shared: &BalancerState) -> Status {
    let backends = shared
        .backends
        .snapshot()
        .iter()
        .map(|b| BackendStatus {
            addr: b.addr().to_string(),
            weight: b.weight_now(),
            healthy: b.is_healthy(),
            ejected: b.is_ejected(),
            draining: b.is_draining(),
            available: b.is_available(),
            in_flight: b.in_flight_now(),
            queue: b.gate().queue_len(),
            requests_total: b.requests_total(),
            errors_total: b.errors_total(),
            rate_per_sec: b.rate_per_sec(),
            idle_connections: b.idle_connections(),
        })
        .collect();
    Status {
        uptime_secs: shared.started.elapsed().as_secs(),
        strategy: strategy_name(shared.config.load().strategy).to_owned(),
        panic: shared.backends.load().in_panic(),
        backends,
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the HTML page.
pub fn render_html(status: &Status) -> String {
    let mut rows = String::new();
    for b in &status.backends {
        let (state, class) = if b.draining {
            ("draining", "warn")
        } else if !b.healthy {
            ("down", "bad")
        } else if b.ejected {
            ("ejected", "bad")
        } else {
            ("up", "ok")
        };
        let _ = writeln!(
            rows,
            "<tr><td>{addr}</td><td class=\"{class}\">{state}</td><td>{w}</td><td>{inf}</td>\
             <td>{q}</td><td>{rate:.1}</td><td>{req}</td><td>{err}</td><td>{idle}</td></tr>",
            addr = escape(&b.addr),
            w = b.weight,
            inf = b.in_flight,
            q = b.queue,
            rate = b.rate_per_sec,
            req = b.requests_total,
            err = b.errors_total,
            idle = b.idle_connections,
        );
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta http-equiv=\"refresh\" content=\"2\">\n<title>balancer status</title>\n<style>\n\
body {{ font-family: system-ui, sans-serif; margin: 2em; }}\n\
table {{ border-collapse: collapse; }}\n\
th, td {{ padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: right; }}\n\
th:first-child, td:first-child {{ text-align: left; }}\n\
.ok {{ color: #080; }} .bad {{ color: #b00; font-weight: bold; }} .warn {{ color: #a60; }}\n\
</style>\n</head>\n<body>\n<h1>balancer</h1>\n\
<p>strategy <b>{strategy}</b> &middot; up {uptime} s &middot; {n} backends &middot; refreshes every 2 s</p>\n{panic}\
<table>\n<thead><tr><th>backend</th><th>state</th><th>weight</th><th>in flight</th><th>queue</th>\
<th>req/s</th><th>requests</th><th>errors</th><th>idle conns</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n\
</body>\n</html>\n",
        strategy = escape(&status.strategy),
        uptime = status.uptime_secs,
        n = status.backends.len(),
        panic = if status.panic {
            "<p class=\"bad\">every backend is down or ejected: requests are tried on them anyway (panic)</p>\n"
        } else {
            ""
        },
    )
}
