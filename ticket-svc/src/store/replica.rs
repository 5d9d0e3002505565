//! Read replicas: a PostgreSQL hot standby (the database's own streaming replication) that
//! serves the polling reads of `GET /purchases/{id}`, so the primary keeps its connections and
//! CPU for deciding.
//!
//! The rule that keeps a buyer's view from going backwards: **a replica answers only with a
//! final purchase** (confirmed or rejected). A decision never changes once made, so a final
//! answer from a replica, however far behind it is, is the answer the primary would give. A
//! purchase the replica shows pending, or does not have yet, is read from the primary, which is
//! never behind itself. So a buyer who saw "confirmed" can never see "pending" after it, and
//! the replica only ever takes reads off the primary, never adds to them. A replica that fails
//! a read is skipped for that read.
//!
//! The replica's lag is read every 2 s (`ticket_store_replica_lag_seconds{shard}`: 0 when it has
//! replayed everything it received, else the age of the last transaction it replayed), and its
//! reads are counted by outcome (`ticket_store_replica_reads_total{shard,result}`: `final`
//! answered by the replica, `primary` sent on, `error`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::error::StoreError;
use super::pg_pool::{Pool, connect_one, pg};

/// How often a replica's lag is read.
const LAG_EVERY: Duration = Duration::from_secs(2);

/// `shard` and `result` labels of the replica reads counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReplicaReadLabels {
    /// The shard (0 for an unsharded store).
    pub shard: u8,
    /// `final`, `primary` or `error`.
    pub result: &'static str,
}

/// `shard` label of the lag gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReplicaLabels {
    /// The shard (0 for an unsharded store).
    pub shard: u8,
}

/// The replicas' metrics, shared by every shard's replica of one store.
#[derive(Debug, Clone, Default)]
pub struct ReplicaMetrics {
    reads: Family<ReplicaReadLabels, Counter>,
    lag: Family<ReplicaLabels, Gauge<f64, AtomicU64>>,
}

impl ReplicaMetrics {
    /// Registers the families in `registry` (they stay shared with the store).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ticket_store_replica_reads",
            "Purchase reads tried on a read replica, by result: final (answered there), primary (pending or missing there: read from the primary), error",
            self.reads.clone(),
        );
        registry.register(
            "ticket_store_replica_lag_seconds",
            "How far a read replica is behind: 0 when it has replayed all it received, else the age of the last transaction it replayed",
            self.lag.clone(),
        );
    }
}

/// One shard's replica.
pub(super) struct Replica {
    pub(super) pool: Arc<Pool>,
    shard: u8,
    metrics: ReplicaMetrics,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Connects to `url`, which must be a hot standby (`pg_is_in_recovery()`): a primary given
    /// as a replica would take reads without taking writes off anything, and hide a mistake.
    /// Its lag is read every 2 s while the replica is in use.
    pub(super) async fn connect(
        url: &str,
        schema: Option<String>,
        pool_size: usize,
        shard: u8,
        metrics: ReplicaMetrics,
    ) -> Result<Arc<Self>, StoreError> {
        let first = connect_one(url, schema.as_deref()).await?;
        let standby: bool = first
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(pg("ask the replica whether it is a standby"))?
            .try_get(0)
            .map_err(pg("ask the replica whether it is a standby"))?;
        if !standby {
            return Err(StoreError::ShardConfig {
                reason: format!(
                    "the replica given for shard {shard} ({}) is not a standby: give a hot \
                     standby of that shard's database",
                    super::urls::redacted_url(url)
                ),
            });
        }
        for result in ["final", "primary", "error"] {
            metrics
                .reads
                .get_or_create(&ReplicaReadLabels { shard, result })
                .inc_by(0);
        }
        let replica = Arc::new(Self {
            pool: Arc::new(Pool::new(url, schema, pool_size, first)),
            shard,
            metrics,
        });
        tokio::spawn(watch_lag(Arc::downgrade(&replica)));
        Ok(replica)
    }

    /// The metrics it reports to.
    pub(super) fn metrics(&self) -> &ReplicaMetrics {
        &self.metrics
    }

    /// Counts a read by its `result`.
    pub(super) fn counted(&self, result: &'static str) {
        self.metrics
            .reads
            .get_or_create(&ReplicaReadLabels {
                shard: self.shard,
                result,
            })
            .inc();
    }
}

/// Reads the replica's lag every [`LAG_EVERY`] until the replica is dropped.
async fn watch_lag(replica: std::sync::Weak<Replica>) {
    loop {
        tokio::time::sleep(LAG_EVERY).await;
        let Some(r) = replica.upgrade() else { return };
        let lag = async {
            let mut c = r.pool.get().await?;
            let row = c
                .client()?
                .query_one(
                    "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                     ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
                     END::float8",
                    &[],
                )
                .await
                .map_err(pg("read the replica's lag"))?;
            row.try_get::<_, f64>(0)
                .map_err(pg("read the replica's lag"))
        };
        match lag.await {
            Ok(seconds) => {
                r.metrics
                    .lag
                    .get_or_create(&ReplicaLabels { shard: r.shard })
                    .set(seconds);
            }
            Err(e) => tracing::warn!(shard = r.shard, error = %e, "cannot read the replica's lag"),
        }
    }
}
