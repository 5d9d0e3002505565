//! Where a running cluster listens, and the lines `up --cluster` prints of it.

use std::net::SocketAddr;

/// The addresses of a running cluster.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// Each balancer's public address: where buyers go.
    pub public: Vec<SocketAddr>,
    /// Each balancer's admin address (`/status`, `/metrics`).
    pub admin: Vec<SocketAddr>,
    /// Each API's address.
    pub apis: Vec<SocketAddr>,
    /// Each API's `/metrics` address.
    pub api_metrics: Vec<SocketAddr>,
    /// Each broker's client address.
    pub brokers: Vec<SocketAddr>,
    /// Each broker's `/metrics` address.
    pub broker_metrics: Vec<SocketAddr>,
    /// Each worker process's `/metrics` address.
    pub worker_metrics: Vec<SocketAddr>,
    /// The runner's `/status` and `/metrics`.
    pub status: Option<SocketAddr>,
}

impl Addresses {
    /// Each balancer's public address as a URL: the targets of a crowd.
    pub fn public_urls(&self) -> Vec<String> {
        self.public.iter().map(|a| format!("http://{a}")).collect()
    }
}

impl std::fmt::Display for Addresses {
    /// Every URL, a line each, as `up --cluster` prints them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ticketrush is up (a cluster of processes)")?;
        if let Some(status) = self.status {
            writeln!(
                f,
                "  processes:            http://{status}/status  (metrics: /metrics)"
            )?;
        }
        for (i, (public, admin)) in self.public.iter().zip(&self.admin).enumerate() {
            let n = i + 1;
            writeln!(f, "  buyers (balancer {n}):  http://{public}")?;
            writeln!(
                f,
                "  balancer {n} status:    http://{admin}/status  (metrics: /metrics)"
            )?;
        }
        for (i, (addr, metrics)) in self.brokers.iter().zip(&self.broker_metrics).enumerate() {
            writeln!(
                f,
                "  broker {}:             {addr}  (metrics: http://{metrics}/metrics)",
                i + 1
            )?;
        }
        for (i, metrics) in self.api_metrics.iter().enumerate() {
            writeln!(
                f,
                "  api {} metrics:        http://{metrics}/metrics",
                i + 1
            )?;
        }
        for (i, metrics) in self.worker_metrics.iter().enumerate() {
            writeln!(
                f,
                "  worker {} metrics:     http://{metrics}/metrics",
                i + 1
            )?;
        }
        Ok(())
    }
}
