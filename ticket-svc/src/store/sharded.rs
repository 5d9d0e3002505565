//! [`ShardedStore`]: the PostgreSQL store sharded by event. Events are independent, so an event,
//! its purchases and its buyers' totals live in one shard's database, and decisions for events
//! on different shards share nothing.
//!
//! Invariants:
//! - **A shard is its place in the URL list**, and each database records that place at its first
//!   open as a shard (`shard_identity`); opened at another place it is refused
//!   ([`StoreError::ShardMismatch`]). Nothing ever moves: a shard is added by appending a URL,
//!   and a URL is never reordered or removed. At most [`MAX_SHARDS`] shards.
//! - **Shard 0 holds the catalog** `event_shards(event_id, shard)` and the event id sequence, so
//!   event ids are unique across shards. An event id without a catalog row was created before
//!   sharding (one database) and lives on shard 0.
//! - **Placement rule:** a new event goes to shard `id % shards`, with the shard count at its
//!   creation. That spreads new events, which carry the coming load, evenly over every shard,
//!   a freshly added one included (placing by fewest events would send every new event to the
//!   new shard until it caught up). The choice is recorded before the event row is written, so
//!   a later shard count moves nothing. The mapping never changes, so it is cached here.
//! - **A purchase id names its shard** ([`PurchaseId::on_shard`]: the API stamps it from
//!   [`Store::shard_of`]), so [`Store::purchase`] reads one database with no lookup. Writes
//!   follow the job's event.
//! - Every sale rule and CHECK constraint holds per event exactly as in one database: the whole
//!   event is in one. **"One transaction per batch" becomes one per shard**:
//!   [`Store::decide_batch`] groups the jobs by shard and runs one transaction on each,
//!   concurrently, and answers in the batch's order. If any shard fails the call fails; the
//!   batch is tried again or redelivered, and the shards that committed read their decisions
//!   back (the store decides a purchase id once), so nothing is sold twice. The price: a shard
//!   that is down holds up the batches it shares with healthy shards.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use dashmap::DashMap;
use futures_util::future::join_all;
use prometheus_client::registry::Registry;

use super::contract::{RecordedPace, Store};
use super::error::StoreError;
use super::postgres::PostgresStore;
use super::replica::ReplicaMetrics;
use super::urls::{is_postgres_url, redacted_url};
use crate::domain::{
    Decision, Event, EventId, EventSpec, LinePace, MAX_SHARDS, Position, Purchase, PurchaseId,
    PurchaseJob, PurchaseStatus, QueuedJob,
};
use crate::metrics::{ShardLabels, ShardMetrics};

/// The most event placements kept in memory; past it the cache starts again (a miss costs one
/// catalog read on shard 0).
const MAX_CACHED_PLACEMENTS: usize = 100_000;

/// The PostgreSQL [`Store`] over several databases, sharded by event (see the module docs).
#[derive(Clone)]
pub struct ShardedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shard i is the i-th URL's database.
    shards: Vec<PostgresStore>,
    /// Each event's shard, as the catalog says (immutable, so never stale).
    placements: DashMap<EventId, u8>,
    metrics: ShardMetrics,
    /// Shared by the shards' replicas, when any was given.
    replica_metrics: Option<ReplicaMetrics>,
}

impl fmt::Debug for ShardedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedStore")
            .field("shards", &self.inner.shards)
            .field("cached_placements", &self.inner.placements.len())
            .finish_non_exhaustive()
    }
}

/// Wraps an error from shard `shard` so that it names the shard.
fn on_shard(shard: u8) -> impl FnOnce(StoreError) -> StoreError {
    move |source| StoreError::Shard {
        shard,
        source: Box::new(source),
    }
}

/// Wraps an error from shard `shard` as [`on_shard`] does, except the answers about an event
/// itself (no such event, no waiting room): the same from every store, not a shard's failure.
fn about_the_event_or_on(shard: u8) -> impl FnOnce(StoreError) -> StoreError {
    move |e| match e {
        e @ (StoreError::NoSuchEvent { .. } | StoreError::NoWaitingRoom { .. }) => e,
        e => on_shard(shard)(e),
    }
}

/// Of two failures, the one to report: a transient one wins, so the worker waits an outage out
/// in place (the other failure shows again on the next try); otherwise the first.
fn worse(kept: Option<StoreError>, new: StoreError) -> StoreError {
    match kept {
        Some(k) if k.is_transient() || !new.is_transient() => k,
        _ => new,
    }
}

impl ShardedStore {
    /// Opens every shard (`urls[i]` is shard i; each a `postgres://` URL), applies migrations,
    /// records or checks each database's shard index, and opens the catalog on shard 0. Each
    /// shard keeps up to `pool_size` connections.
    ///
    /// # Errors
    /// [`StoreError::ShardConfig`] for a list that is empty, too long or not all PostgreSQL, for
    /// a new shard that already holds events, and for a catalog that places events on a shard
    /// past the list's end (a URL was removed); [`StoreError::ShardMismatch`] for a database at
    /// another place than it recorded; a shard's connection or migration error, naming it.
    pub async fn open(urls: &[impl AsRef<str>], pool_size: usize) -> Result<Self, StoreError> {
        Self::open_with_replicas(urls, &[] as &[&str], pool_size).await
    }

    /// [`ShardedStore::open`], and `replicas[i]` (when given) a hot standby of shard i that
    /// answers reads of decided purchases ([`super::replica`]).
    ///
    /// # Errors
    /// As [`ShardedStore::open`]; more replicas than shards; a replica unreachable or not a
    /// standby.
    pub async fn open_with_replicas(
        urls: &[impl AsRef<str>],
        replicas: &[impl AsRef<str>],
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        let count = urls.len();
        if replicas.len() > count {
            return Err(StoreError::ShardConfig {
                reason: format!(
                    "{} replica URLs for {count} database URLs: give at most one per \
                     database, in the same order",
                    replicas.len()
                ),
            });
        }
        let replica_metrics = (!replicas.is_empty()).then(ReplicaMetrics::default);
        if !(1..=MAX_SHARDS).contains(&count) {
            return Err(StoreError::ShardConfig {
                reason: format!(
                    "{count} database URLs given: a sharded store has 1 to {MAX_SHARDS}"
                ),
            });
        }
        if let Some((i, url)) = urls
            .iter()
            .enumerate()
            .find(|(_, u)| !is_postgres_url(u.as_ref()))
        {
            return Err(StoreError::ShardConfig {
                reason: format!(
                    "shard {i} ({}) is not a postgres:// URL: with several database URLs every \
                     one must be PostgreSQL",
                    redacted_url(url.as_ref())
                ),
            });
        }
        let mut shards = Vec::with_capacity(count);
        for (i, url) in urls.iter().enumerate() {
            let url = url.as_ref();
            let shard = u8::try_from(i).map_err(|_| StoreError::ShardConfig {
                reason: format!("shard index {i} is over 255"),
            })?;
            let mut store = PostgresStore::connect(url, pool_size)
                .await
                .map_err(on_shard(shard))?;
            store.claim_shard(i, &redacted_url(url)).await?;
            if let (Some(replica), Some(metrics)) = (replicas.get(i), &replica_metrics) {
                store = store
                    .with_replica(replica.as_ref(), shard, metrics.clone())
                    .await
                    .map_err(on_shard(shard))?;
            }
            shards.push(store);
        }
        let catalog = shards.first().ok_or_else(|| StoreError::ShardConfig {
            reason: "no database URL given".into(),
        })?;
        let highest = catalog.open_catalog().await.map_err(on_shard(0))?;
        if let Some(h) = highest
            && usize::try_from(h).ok().is_none_or(|h| h >= count)
        {
            return Err(StoreError::ShardConfig {
                reason: format!(
                    "the catalog on shard 0 places events on shard {h}, but only {count} database \
                     URLs were given: a URL was removed; give every shard's URL, in order"
                ),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shards,
                placements: DashMap::new(),
                metrics: ShardMetrics::new(count),
                replica_metrics,
            }),
        })
    }

    /// How many shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// Shard `index`'s own store, if there is one (for tools and tests that look inside).
    pub fn shard(&self, index: u8) -> Option<&PostgresStore> {
        self.inner.shards.get(usize::from(index))
    }

    /// Shard `index`, or an error saying this process was not given it: an event placed there
    /// by a process with a longer URL list. Transient: it ends when this process is restarted
    /// with every URL.
    fn shard_or_unknown(&self, index: u8, event: EventId) -> Result<&PostgresStore, StoreError> {
        self.shard(index).ok_or_else(|| StoreError::Unavailable {
            reason: format!(
                "event {event} is on shard {index}, but this process was given {} database \
                 URLs: restart it with every shard's URL",
                self.shard_count()
            ),
        })
    }

    fn catalog(&self) -> Result<&PostgresStore, StoreError> {
        self.shard(0).ok_or_else(|| StoreError::ShardConfig {
            reason: "no shard 0".into(),
        })
    }

    fn remember(&self, event: EventId, shard: u8) {
        let placements = &self.inner.placements;
        if placements.len() >= MAX_CACHED_PLACEMENTS {
            placements.clear();
        }
        placements.insert(event, shard);
    }

    /// The shard that holds `event`, and its store.
    async fn event_shard(&self, event: EventId) -> Result<(u8, &PostgresStore), StoreError> {
        let shard = self.shard_of(event).await?;
        Ok((shard, self.shard_or_unknown(shard, event)?))
    }

    /// Decides `jobs`, all of one shard, in one transaction there, counting it per shard.
    async fn decide_on(&self, shard: u8, jobs: &[QueuedJob]) -> Result<Vec<Decision>, StoreError> {
        let labels = ShardLabels { shard };
        let decided = match jobs.first() {
            Some(first) => {
                self.shard_or_unknown(shard, first.job.event_id)?
                    .decide_batch(jobs)
                    .await
            }
            None => Ok(Vec::new()),
        };
        match decided {
            Ok(decisions) if decisions.len() == jobs.len() => {
                self.inner
                    .metrics
                    .decisions
                    .get_or_create(&labels)
                    .inc_by(u64::try_from(decisions.len()).unwrap_or(u64::MAX));
                Ok(decisions)
            }
            Ok(decisions) => {
                self.inner.metrics.errors.get_or_create(&labels).inc();
                Err(on_shard(shard)(StoreError::Corrupt {
                    what: format!("{} decisions for {} jobs", decisions.len(), jobs.len()),
                }))
            }
            Err(e) => {
                self.inner.metrics.errors.get_or_create(&labels).inc();
                Err(on_shard(shard)(e))
            }
        }
    }

    /// Decides one purchase now without a queue, on its event's shard (the naive baseline the
    /// benchmarks compare against; see [`PostgresStore::sell_now`]).
    pub async fn sell_now(&self, job: &PurchaseJob) -> Result<(Position, Decision), StoreError> {
        let (shard, store) = self.event_shard(job.event_id).await?;
        store.sell_now(job).await.map_err(on_shard(shard))
    }
}

impl Store for ShardedStore {
    async fn create_event(&self, spec: &EventSpec) -> Result<Event, StoreError> {
        let catalog = self.catalog()?;
        let id = catalog.next_event_id().await.map_err(on_shard(0))?;
        let count = i64::try_from(self.shard_count()).unwrap_or(1).max(1);
        let shard = u8::try_from(id.0.rem_euclid(count)).map_err(|_| StoreError::Corrupt {
            what: format!("event id {id} places on no shard of {count}"),
        })?;
        // The catalog first: an event row is never without its placement.
        catalog.place_event(id, shard).await.map_err(on_shard(0))?;
        let event = self
            .shard_or_unknown(shard, id)?
            .create_event_with_id(id, spec)
            .await
            .map_err(on_shard(shard))?;
        self.remember(id, shard);
        Ok(event)
    }

    async fn event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        let (shard, store) = self.event_shard(id).await?;
        store.event(id).await.map_err(on_shard(shard))
    }

    async fn record_pending(&self, job: &QueuedJob) -> Result<Position, StoreError> {
        let (shard, store) = self.event_shard(job.job.event_id).await?;
        store.record_pending(job).await.map_err(on_shard(shard))
    }

    async fn purchase(&self, id: PurchaseId) -> Result<Option<Purchase>, StoreError> {
        let shard = id.shard();
        match self.shard(shard) {
            Some(store) => store.purchase(id).await.map_err(on_shard(shard)),
            // An id stamped for a shard this store does not have names no purchase of it.
            None => Ok(None),
        }
    }

    async fn decide_batch(&self, jobs: &[QueuedJob]) -> Result<Vec<Decision>, StoreError> {
        // Each job's shard (a batch holds few events: one lookup each).
        let mut shard_of_event: HashMap<EventId, u8> = HashMap::new();
        let mut groups: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
        for (i, j) in jobs.iter().enumerate() {
            let event = j.job.event_id;
            let shard = match shard_of_event.get(&event) {
                Some(s) => *s,
                None => {
                    let s = self.shard_of(event).await?;
                    shard_of_event.insert(event, s);
                    s
                }
            };
            groups.entry(shard).or_default().push(i);
        }
        if groups.len() <= 1 {
            // All on one shard (the usual case): the batch as it is, one transaction.
            let shard = groups.keys().next().copied().unwrap_or(0);
            return self.decide_on(shard, jobs).await;
        }
        // One transaction per shard, concurrently; each shard's jobs in the batch's order.
        let runs = groups.into_iter().map(|(shard, indexes)| async move {
            let part: Vec<QueuedJob> = indexes
                .iter()
                .filter_map(|i| jobs.get(*i))
                .cloned()
                .collect();
            let decided = self.decide_on(shard, &part).await;
            (indexes, decided)
        });
        let mut decisions: Vec<Option<Decision>> = vec![None; jobs.len()];
        let mut failed = None;
        for (indexes, decided) in join_all(runs).await {
            match decided {
                Ok(ds) => {
                    for (i, d) in indexes.into_iter().zip(ds) {
                        if let Some(slot) = decisions.get_mut(i) {
                            *slot = Some(d);
                        }
                    }
                }
                Err(e) => failed = Some(worse(failed, e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        decisions
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| StoreError::Corrupt {
                what: "a job of a sharded batch got no decision".into(),
            })
    }

    async fn mark_failed(&self, job: &QueuedJob) -> Result<PurchaseStatus, StoreError> {
        let (shard, store) = self.event_shard(job.job.event_id).await?;
        store.mark_failed(job).await.map_err(on_shard(shard))
    }

    async fn event_purchases(
        &self,
        event: EventId,
        limit: u32,
    ) -> Result<Vec<Purchase>, StoreError> {
        let (shard, store) = self.event_shard(event).await?;
        store
            .event_purchases(event, limit)
            .await
            .map_err(on_shard(shard))
    }

    async fn seal_line(&self, event: EventId, size: u64) -> Result<u64, StoreError> {
        // An unknown event is looked up on shard 0, which answers that it has no such event.
        let (shard, store) = self.event_shard(event).await?;
        store
            .seal_line(event, size)
            .await
            .map_err(about_the_event_or_on(shard))
    }

    async fn line_pace(&self, event: EventId) -> Result<Option<LinePace>, StoreError> {
        // As `seal_line`: an unknown event is looked up on shard 0.
        let (shard, store) = self.event_shard(event).await?;
        store
            .line_pace(event)
            .await
            .map_err(about_the_event_or_on(shard))
    }

    async fn record_line_pace(
        &self,
        event: EventId,
        current: Option<LinePace>,
        next: LinePace,
    ) -> Result<RecordedPace, StoreError> {
        let (shard, store) = self.event_shard(event).await?;
        store
            .record_line_pace(event, current, next)
            .await
            .map_err(about_the_event_or_on(shard))
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let checks = self
            .inner
            .shards
            .iter()
            .enumerate()
            .map(|(i, store)| async move {
                let shard = u8::try_from(i).unwrap_or(u8::MAX);
                store.check_ready().await.map_err(on_shard(shard))
            });
        join_all(checks).await.into_iter().collect()
    }

    async fn shard_of(&self, event: EventId) -> Result<u8, StoreError> {
        if let Some(s) = self.inner.placements.get(&event) {
            return Ok(*s);
        }
        let (recorded, on_shard_zero) = self
            .catalog()?
            .placement(event)
            .await
            .map_err(on_shard(0))?;
        let shard = match recorded {
            Some(s) => u8::try_from(s).map_err(|_| StoreError::Corrupt {
                what: format!("event_shards.shard = {s} for event {event}"),
            })?,
            // Created before sharding.
            None if on_shard_zero => 0,
            // No such event (yet: its catalog row comes first), so nothing to remember.
            None => return Ok(0),
        };
        self.shard_or_unknown(shard, event)?;
        self.remember(event, shard);
        Ok(shard)
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.inner.metrics.register(registry);
    }

    fn register_read_metrics(&self, registry: &mut Registry) {
        if let Some(m) = &self.inner.replica_metrics {
            m.register(registry);
        }
    }
}
