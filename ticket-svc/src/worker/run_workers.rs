//! A process's worth of workers: N [`Worker`]s over one store and queue, and optionally a
//! `/metrics` listener, until shutdown. What `ticket-svc worker` runs.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::purchase_worker::{Worker, WorkerConfig};
use crate::metrics::Metrics;
use crate::queue::PurchaseQueue;
use crate::store::Store;

/// Runs `count` workers over one store and queue until `shutdown` is cancelled; each finishes
/// the batch it is in first. With `metrics_listener`, serves `/metrics` there meanwhile. A
/// configuration out of range is an `InvalidInput` error before any worker starts.
pub async fn run_workers<S: Store, Q: PurchaseQueue>(
    store: Arc<S>,
    queue: Arc<Q>,
    count: usize,
    config: WorkerConfig,
    metrics_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    config
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    // The store's own metrics (a sharded store's per-shard decisions) beside the workers'.
    store.register_metrics(&mut registry);
    let mut tasks = JoinSet::new();
    for i in 0..count.max(1) {
        let worker = Worker::new(
            Arc::clone(&store),
            Arc::clone(&queue),
            Arc::clone(&metrics),
            config.clone(),
            format!("worker-{}-{i}", std::process::id()),
        );
        let token = shutdown.clone();
        tasks.spawn(async move { worker.run(token).await });
    }
    let metrics_server = async {
        if let Some(l) = metrics_listener {
            plumbing::metrics::serve(l, Arc::new(registry), || {}, shutdown.clone()).await;
        }
    };
    let workers = async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a worker task ended abnormally");
            }
        }
    };
    tokio::join!(metrics_server, workers);
    Ok(())
}
