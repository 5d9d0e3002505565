//! The accept loop: bounded connections, a deadline on reading request headers (also bounding
//! idle keep-alive connections), and a drain on shutdown.
//!
//! Why not `axum::serve`: it has no header-read deadline and no connection cap, and STYLE asks
//! for both on every listener.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use plumbing::accept::{Admitted, CappedListener, WhenFull};

use crate::config_error::ConfigError;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Listener limits.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The longest a connection may take to send a request's headers (and stay idle between
    /// keep-alive requests).
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub drain_timeout: Duration,
}

impl ServeConfig {
    /// Checks every setting's range.
    ///
    /// # Errors
    /// The first setting out of its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check(
            !self.header_read_timeout.is_zero(),
            "ServeConfig::header_read_timeout",
            "must be more than zero",
        )?;
        ConfigError::check(
            self.max_connections > 0,
            "ServeConfig::max_connections",
            "must be at least 1",
        )
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// in-flight requests finish (up to the drain timeout) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let listener = CappedListener::new(listener, config.max_connections, WhenFull::Wait);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Some(Admitted { stream, peer, slot }) = listener.admit(&shutdown).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(router.clone()),
            )
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?config.drain_timeout, "drain timed out; closing the remaining connections");
    }
    connections.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate_and_each_range_is_checked() {
        crate::testing::assert_each_refused(
            &ServeConfig::default(),
            ServeConfig::validate,
            &[
                ("ServeConfig::header_read_timeout", |c| {
                    c.header_read_timeout = Duration::ZERO;
                }),
                ("ServeConfig::max_connections", |c| c.max_connections = 0),
            ],
        );
    }
}
