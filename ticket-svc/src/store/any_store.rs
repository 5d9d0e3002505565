//! [`AnyStore`]: the SQLite, the PostgreSQL or the sharded PostgreSQL store, chosen at run time
//! by the database URLs.

use prometheus_client::registry::Registry;

use super::contract::{RecordedPace, Store};
use super::error::StoreError;
use super::postgres::PostgresStore;
use super::replica::ReplicaMetrics;
use super::sharded::ShardedStore;
use super::sqlite::SqliteStore;
use super::urls::{is_postgres_url, redacted_url};
use crate::domain::{
    Decision, Event, EventId, EventSpec, LinePace, Position, Purchase, PurchaseId, PurchaseJob,
    PurchaseStatus, QueuedJob,
};

/// Any store, chosen at run time by URL.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// `sqlite://PATH`.
    Sqlite(SqliteStore),
    /// `postgres://...`.
    Postgres(PostgresStore),
    /// Several `postgres://...`, sharded by event.
    Sharded(ShardedStore),
}

impl AnyStore {
    /// Opens the store a URL names and applies migrations. A PostgreSQL database that is a shard
    /// of a sharded store is refused (it needs the other shards' URLs too), unless it is shard 0
    /// and no event lives elsewhere.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Self::Sqlite(SqliteStore::open(path).await?))
        } else if is_postgres_url(url) {
            let store = PostgresStore::connect(url, PostgresStore::DEFAULT_POOL_SIZE).await?;
            store.refuse_if_sharded().await?;
            Ok(Self::Postgres(store))
        } else {
            Err(StoreError::BadUrl {
                url: redacted_url(url),
            })
        }
    }

    /// Opens the store a list of URLs names: one URL is [`AnyStore::open`]; several are a
    /// [`ShardedStore`], URL i being shard i, every one `postgres://` (see
    /// [`ShardedStore::open`]).
    pub async fn open_all(urls: &[impl AsRef<str>]) -> Result<Self, StoreError> {
        Self::open_with_replicas(urls, &[] as &[&str]).await
    }

    /// [`AnyStore::open_all`], and `replicas[i]` (when given) a hot standby of database i
    /// (PostgreSQL streaming replication) that answers reads of decided purchases
    /// ([`super::replica`]).
    ///
    /// # Errors
    /// As [`AnyStore::open_all`]; a replica for SQLite, more replicas than databases, a replica
    /// unreachable or not a standby.
    pub async fn open_with_replicas(
        urls: &[impl AsRef<str>],
        replicas: &[impl AsRef<str>],
    ) -> Result<Self, StoreError> {
        match (urls, replicas) {
            ([], _) => Err(StoreError::ShardConfig {
                reason: "no database URL given".into(),
            }),
            ([one], []) => Self::open(one.as_ref()).await,
            ([one], [replica]) => match Self::open(one.as_ref()).await? {
                Self::Postgres(store) => Ok(Self::Postgres(
                    store
                        .with_replica(replica.as_ref(), 0, ReplicaMetrics::default())
                        .await?,
                )),
                _ => Err(StoreError::ShardConfig {
                    reason: "a read replica needs a postgres:// database".into(),
                }),
            },
            many => Ok(Self::Sharded(
                ShardedStore::open_with_replicas(many.0, many.1, PostgresStore::DEFAULT_POOL_SIZE)
                    .await?,
            )),
        }
    }

    /// Decides one purchase now, in one transaction, without a queue (the naive baseline the
    /// benchmarks compare against; see [`SqliteStore::sell_now`]): its position and decision.
    pub async fn sell_now(&self, job: &PurchaseJob) -> Result<(Position, Decision), StoreError> {
        match self {
            Self::Sqlite(s) => s.sell_now(job).await,
            Self::Postgres(s) => s.sell_now(job).await,
            Self::Sharded(s) => Box::pin(s.sell_now(job)).await,
        }
    }
}

/// Calls the chosen store. PostgreSQL's futures (tokio-postgres underneath) are ~3 KiB, seven
/// times SQLite's, and every caller's future is as big as the bigger variant: unboxed, each
/// purchase in `up` moved a 6.7 KiB handler future around (memcpy was 7.7% of `up`'s
/// instructions under a rush, callgrind). Boxed, PostgreSQL pays one allocation per call, next to
/// a network round trip.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call.await,
            AnyStore::Postgres($s) => Box::pin($call).await,
            AnyStore::Sharded($s) => Box::pin($call).await,
        }
    };
}

impl Store for AnyStore {
    async fn create_event(&self, spec: &EventSpec) -> Result<Event, StoreError> {
        delegate!(self, s => s.create_event(spec))
    }
    async fn event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        delegate!(self, s => s.event(id))
    }
    async fn record_pending(&self, job: &QueuedJob) -> Result<Position, StoreError> {
        delegate!(self, s => s.record_pending(job))
    }
    async fn purchase(&self, id: PurchaseId) -> Result<Option<Purchase>, StoreError> {
        delegate!(self, s => s.purchase(id))
    }
    async fn decide_batch(&self, jobs: &[QueuedJob]) -> Result<Vec<Decision>, StoreError> {
        delegate!(self, s => s.decide_batch(jobs))
    }
    async fn mark_failed(&self, job: &QueuedJob) -> Result<PurchaseStatus, StoreError> {
        delegate!(self, s => s.mark_failed(job))
    }
    async fn event_purchases(
        &self,
        event: EventId,
        limit: u32,
    ) -> Result<Vec<Purchase>, StoreError> {
        delegate!(self, s => s.event_purchases(event, limit))
    }
    async fn seal_line(&self, event: EventId, size: u64) -> Result<u64, StoreError> {
        delegate!(self, s => s.seal_line(event, size))
    }
    async fn line_pace(&self, event: EventId) -> Result<Option<LinePace>, StoreError> {
        delegate!(self, s => s.line_pace(event))
    }
    async fn record_line_pace(
        &self,
        event: EventId,
        current: Option<LinePace>,
        next: LinePace,
    ) -> Result<RecordedPace, StoreError> {
        delegate!(self, s => s.record_line_pace(event, current, next))
    }
    async fn check_ready(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.check_ready())
    }
    async fn shard_of(&self, event: EventId) -> Result<u8, StoreError> {
        match self {
            Self::Sharded(s) => Box::pin(s.shard_of(event)).await,
            Self::Sqlite(_) | Self::Postgres(_) => Ok(0),
        }
    }
    fn register_metrics(&self, registry: &mut Registry) {
        match self {
            Self::Sharded(s) => s.register_metrics(registry),
            Self::Sqlite(_) | Self::Postgres(_) => {}
        }
    }
    fn register_read_metrics(&self, registry: &mut Registry) {
        match self {
            Self::Sharded(s) => s.register_read_metrics(registry),
            Self::Postgres(s) => s.register_replica_metrics(registry),
            Self::Sqlite(_) => {}
        }
    }
}
