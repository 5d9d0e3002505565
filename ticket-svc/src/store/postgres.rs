//! The PostgreSQL store: a pool of tokio-postgres connections, each with its prepared
//! statements cached (one round trip per query instead of two).
//!
//! Concurrency: [`Store::decide_batch`] locks the batch's event rows (`FOR NO KEY UPDATE`, in id
//! order, so two batches never deadlock) before reading buyer totals and prior decisions;
//! everything that decides a purchase takes that lock, so under READ COMMITTED every read after
//! it sees the latest committed decisions. `NO KEY` matters: the API's inserts check their
//! foreign key to the event with `FOR KEY SHARE`, which a plain `FOR UPDATE` would block for the
//! whole batch. A lost connection is replaced on the next call. Every call is bounded: pool
//! wait, connect and `statement_timeout`.
//!
//! `decide` holds the deciding transaction's SQL and code.

use std::fmt;
use std::sync::Arc;

use tokio_postgres::{Client, GenericClient, Statement};

use prometheus_client::registry::Registry;

use super::contract::{RecordedPace, Store};
use super::error::StoreError;
use super::pg_pool::{Pool, Pooled, connect_one, pg};
use super::replica::{Replica, ReplicaMetrics};
use super::rows::{
    PaceRow, RoomColumns, i32_of, i64_of, line_pace_columns, pace_on_record, parse_status,
    position_of, recorded_pace, sealed_on_record, sealed_size_of, to_purchase, u32_of,
    waiting_room_columns, waiting_room_of, window_columns, window_of,
};
use super::schema;
use crate::domain::{
    Decision, Event, EventId, EventSpec, LinePace, Position, Purchase, PurchaseId, PurchaseJob,
    PurchaseStatus, QueuedJob, RejectReason, WaitingRoom,
};

mod decide;

use decide::{DecideStatements, decide_in};

/// Serializes concurrent migrators (several APIs starting at once).
pub(super) const MIGRATION_LOCK: i64 = 0x7469_636b_6574;

/// A schema name safe to splice into SQL: `[a-z_][a-z0-9_]*`, at most 63 bytes.
fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The PostgreSQL [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Pool>,
    /// A hot standby that answers reads of decided purchases ([`super::replica`]).
    replica: Option<Arc<Replica>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema())
            .field("pool_size", &self.inner.size())
            .finish_non_exhaustive()
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg("begin migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg("lock migrations"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
        .await
        .map_err(pg("create schema_migrations"))?;
    for (version, sql) in schema::POSTGRES {
        let is_done: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)",
                &[version],
            )
            .await
            .map_err(pg("read schema_migrations"))?
            .get(0);
        if !is_done {
            tx.batch_execute(sql).await.map_err(pg("apply migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg("record migration"))?;
        }
    }
    tx.commit().await.map_err(pg("commit migration"))
}

impl PostgresStore {
    /// Connections per store unless told otherwise.
    pub const DEFAULT_POOL_SIZE: usize = 16;

    /// Connects, applies migrations, and keeps up to `pool_size` connections.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::open(url, None, pool_size).await
    }

    /// Like [`PostgresStore::connect`] but with every table in `schema` (created if missing):
    /// what lets tests run side by side in one database.
    pub async fn connect_in_schema(
        url: &str,
        schema: &str,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        if !is_plain_identifier(schema) {
            return Err(StoreError::Unavailable {
                reason: format!("schema name {schema:?} is not a plain identifier"),
            });
        }
        let boot = connect_one(url, None).await?;
        boot.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(pg("create schema"))?;
        Self::open(url, Some(schema.to_owned()), pool_size).await
    }

    /// Drops this store's schema and everything in it (tests clean up with this).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let Some(schema) = self.inner.schema() else {
            return Ok(());
        };
        let mut c = self.pooled().await?;
        c.client()?
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .map_err(pg("drop schema"))
    }

    async fn open(url: &str, schema: Option<String>, pool_size: usize) -> Result<Self, StoreError> {
        let mut first = connect_one(url, schema.as_deref()).await?;
        migrate(&mut first).await?;
        Ok(Self {
            inner: Arc::new(Pool::new(url, schema, pool_size, first)),
            replica: None,
        })
    }

    /// Registers the replica's metrics, when it has one (a sharded store registers its shards'
    /// together instead).
    pub fn register_replica_metrics(&self, registry: &mut Registry) {
        if let Some(r) = &self.replica {
            r.metrics().register(registry);
        }
    }

    /// This store with `url`, a hot standby of its database (PostgreSQL streaming
    /// replication), answering reads of decided purchases (see [`super::replica`]); `shard`
    /// labels its metrics (0 unsharded). Its pool is as large as this store's.
    ///
    /// # Errors
    /// The replica unreachable, or not a standby.
    pub async fn with_replica(
        mut self,
        url: &str,
        shard: u8,
        metrics: ReplicaMetrics,
    ) -> Result<Self, StoreError> {
        let schema = self.inner.schema().map(str::to_owned);
        let replica = Replica::connect(url, schema, self.inner.size(), shard, metrics).await?;
        self.replica = Some(replica);
        Ok(self)
    }

    pub(super) async fn pooled(&self) -> Result<Pooled, StoreError> {
        self.inner.get().await
    }

    /// Decides one purchase now, in one transaction, without a queue: locks the event row,
    /// takes the next position in the event's line (or the one on record, for a purchase id
    /// seen before) and decides it with the same rules and code as [`Store::decide_batch`].
    /// Every sale of an event takes the same lock first, so positions follow the order the
    /// sales were decided in.
    ///
    /// This is the naive one-transaction-per-request design the benchmarks compare the queue
    /// against; the product never calls it.
    pub async fn sell_now(&self, job: &PurchaseJob) -> Result<(Position, Decision), StoreError> {
        let mut c = self.pooled().await?;
        let st = DecideStatements::prepare(&mut c).await?;
        let next_position = c.stmt(SQL_NEXT_POSITION).await?;
        let tx = c
            .client()?
            .transaction()
            .await
            .map_err(pg("begin sell now"))?;
        tx.query(&st.lock_events, &[&vec![job.event_id.0]])
            .await
            .map_err(pg("lock event"))?;
        let position: i64 = tx
            .query_one(
                &next_position,
                &[&job.purchase_id.to_string(), &job.event_id.0],
            )
            .await
            .map_err(pg("read next position"))?
            .try_get(0)
            .map_err(pg("read next position"))?;
        let position = position_of(position)?;
        let queued = QueuedJob {
            job: job.clone(),
            position,
        };
        let decision = decide_in(&tx, &st, std::slice::from_ref(&queued))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt {
                what: "no decision for a one-job batch".into(),
            })?;
        tx.commit().await.map_err(pg("commit sell now"))?;
        Ok((position, decision))
    }
}

type PgPurchaseRow = (String, i64, String, i64, i64, String, Option<String>);

fn purchase_of(r: &tokio_postgres::Row) -> Result<Purchase, StoreError> {
    let row: PgPurchaseRow = (
        r.try_get(0).map_err(pg("read purchase.id"))?,
        r.try_get(1).map_err(pg("read purchase.event_id"))?,
        r.try_get(2).map_err(pg("read purchase.buyer"))?,
        i64::from(
            r.try_get::<_, i32>(3)
                .map_err(pg("read purchase.quantity"))?,
        ),
        r.try_get(4).map_err(pg("read purchase.position"))?,
        r.try_get(5).map_err(pg("read purchase.status"))?,
        r.try_get(6).map_err(pg("read purchase.reason"))?,
    );
    to_purchase(row)
}

/// The columns [`event_of`] reads, in its order: a macro, so that `concat!` makes static SQL
/// of it (prepared statements are cached by their `&'static str`).
macro_rules! event_columns {
    () => {
        "id, name, tickets, max_per_buyer, sold, opens_at_ms, closes_at_ms, \
         line_admit_per_s, line_seed, line_sealed_size, line_pow_bits, line_pacing"
    };
}
pub(super) use event_columns;

/// An event, by id.
const SQL_READ_EVENT: &str = concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1");
/// A new event, with an id from the table's sequence.
const SQL_INSERT_EVENT: &str = concat!(
    "INSERT INTO events (name, tickets, max_per_buyer, opens_at_ms, closes_at_ms,
                         line_admit_per_s, line_seed, line_sealed_size, line_pow_bits,
                         line_pacing)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
    event_columns!()
);
/// Seals an event's line: sets its pre-queue size unless one is on record (or it has no room).
const SQL_SEAL_LINE: &str = "UPDATE events SET line_sealed_size = $2
     WHERE id = $1 AND line_sealed_size IS NULL AND line_admit_per_s IS NOT NULL
     RETURNING line_sealed_size";
/// What an earlier seal left: whether the event has a room, and its size on record.
const SQL_SEALED_SIZE: &str =
    "SELECT line_admit_per_s IS NOT NULL, line_sealed_size FROM events WHERE id = $1";
/// An event's line pace: whether it has a room, and its pace on record (a [`PaceRow`]).
const SQL_LINE_PACE: &str =
    "SELECT e.line_admit_per_s IS NOT NULL, p.at_ms, p.admitted_milli, p.per_s,
            p.per_s_before
     FROM events e LEFT JOIN line_paces p ON p.event_id = e.id WHERE e.id = $1";
/// Records a line's first pace, unless one is on record.
const SQL_INSERT_LINE_PACE: &str =
    "INSERT INTO line_paces (event_id, at_ms, admitted_milli, per_s, per_s_before)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING";
/// Records a line's next pace, if the one on record is still the caller's ($6 to $8: a
/// point is known by where it turns and to what).
const SQL_UPDATE_LINE_PACE: &str = "UPDATE line_paces
     SET at_ms = $2, admitted_milli = $3, per_s = $4, per_s_before = $5
     WHERE event_id = $1 AND at_ms = $6 AND admitted_milli = $7 AND per_s = $8";

/// An event from a row of the columns `event_columns!` names.
pub(super) fn event_of(r: &tokio_postgres::Row) -> Result<Event, StoreError> {
    Ok(Event {
        id: EventId(r.try_get(0).map_err(pg("read event.id"))?),
        name: r.try_get(1).map_err(pg("read event.name"))?,
        tickets: u32_of(
            r.try_get::<_, i32>(2).map_err(pg("read event.tickets"))?,
            "events.tickets",
        )?,
        max_per_buyer: u32_of(
            r.try_get::<_, i32>(3)
                .map_err(pg("read event.max_per_buyer"))?,
            "events.max_per_buyer",
        )?,
        sold: u32_of(
            r.try_get::<_, i32>(4).map_err(pg("read event.sold"))?,
            "events.sold",
        )?,
        window: window_of(
            r.try_get(5).map_err(pg("read event.opens_at_ms"))?,
            r.try_get(6).map_err(pg("read event.closes_at_ms"))?,
        )?,
        waiting_room: waiting_room_of(
            r.try_get::<_, Option<i32>>(7)
                .map_err(pg("read event.line_admit_per_s"))?
                .map(i64::from),
            r.try_get(8).map_err(pg("read event.line_seed"))?,
            r.try_get(9).map_err(pg("read event.line_sealed_size"))?,
            i64::from(
                r.try_get::<_, i32>(10)
                    .map_err(pg("read event.line_pow_bits"))?,
            ),
            r.try_get(11).map_err(pg("read event.line_pacing"))?,
        )?,
    })
}

/// A waiting room as its PostgreSQL columns: [`waiting_room_columns`], and its rate as the
/// `INTEGER` it is stored as (bind that, not the columns' `admit_per_s`).
pub(super) fn pg_waiting_room_columns(
    room: Option<&WaitingRoom>,
) -> (Option<i32>, RoomColumns<'_>) {
    let c = waiting_room_columns(room);
    (c.admit_per_s.map(i32_of), c)
}

/// An event's line pace, read through `client` with `read` ([`SQL_LINE_PACE`] prepared);
/// `None`: no such event.
async fn line_pace_row(
    client: &impl GenericClient,
    read: &Statement,
    event: EventId,
) -> Result<Option<PaceRow>, StoreError> {
    client
        .query_opt(read, &[&event.0])
        .await
        .map_err(pg("read line pace"))?
        .map(|r| {
            Ok::<_, tokio_postgres::Error>((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get::<_, Option<i32>>(3)?.map(i64::from),
                r.try_get::<_, Option<i32>>(4)?.map(i64::from),
            ))
        })
        .transpose()
        .map_err(pg("read line pace"))
}

/// `sell_now`'s place in line: the one on record for this purchase id, else the next one.
const SQL_NEXT_POSITION: &str = "SELECT COALESCE(
                 (SELECT position FROM purchases WHERE id = $1),
                 (SELECT MAX(position) + 1 FROM purchases WHERE event_id = $2),
                 0)";
const PURCHASE_COLUMNS: &str = "id, event_id, buyer, quantity, position, status, reason";

/// One purchase as the database behind `pool` has it.
async fn read_purchase(pool: &Arc<Pool>, id: PurchaseId) -> Result<Option<Purchase>, StoreError> {
    let mut c = pool.get().await?;
    let st = c
        .stmt(
            "SELECT id, event_id, buyer, quantity, position, status, reason
             FROM purchases WHERE id = $1",
        )
        .await?;
    c.client()?
        .query_opt(&st, &[&id.to_string()])
        .await
        .map_err(pg("read purchase"))?
        .as_ref()
        .map(purchase_of)
        .transpose()
}

impl Store for PostgresStore {
    async fn create_event(&self, spec: &EventSpec) -> Result<Event, StoreError> {
        let mut c = self.pooled().await?;
        let (opens_at_ms, closes_at_ms) = window_columns(&spec.window);
        let (admit_per_s, room) = pg_waiting_room_columns(spec.waiting_room.as_ref());
        let row = c
            .client()?
            .query_one(
                SQL_INSERT_EVENT,
                &[
                    &spec.name,
                    &i32_of(spec.tickets),
                    &i32_of(spec.max_per_buyer),
                    &opens_at_ms,
                    &closes_at_ms,
                    &admit_per_s,
                    &room.seed,
                    &room.sealed_size,
                    &room.pow_bits,
                    &room.pacing,
                ],
            )
            .await
            .map_err(pg("insert event"))?;
        event_of(&row)
    }

    async fn event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        let mut c = self.pooled().await?;
        let st = c.stmt(SQL_READ_EVENT).await?;
        c.client()?
            .query_opt(&st, &[&id.0])
            .await
            .map_err(pg("read event"))?
            .as_ref()
            .map(event_of)
            .transpose()
    }

    async fn record_pending(&self, job: &QueuedJob) -> Result<Position, StoreError> {
        let mut c = self.pooled().await?;
        let st = c
            .stmt(
                "INSERT INTO purchases (id, event_id, buyer, quantity, position, status)
                 VALUES ($1, $2, $3, $4, $5, 'pending') ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        let read = c
            .stmt("SELECT position FROM purchases WHERE id = $1")
            .await?;
        // A pending row is a read model the worker recreates from the queued job, so its commit
        // need not wait for the WAL flush (the same reasoning as SQLite's relaxed writes).
        let tx = c
            .client()?
            .transaction()
            .await
            .map_err(pg("begin pending"))?;
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await
            .map_err(pg("relax commit"))?;
        let id = job.job.purchase_id.to_string();
        let inserted = tx
            .execute(
                &st,
                &[
                    &id,
                    &job.job.event_id.0,
                    &job.job.buyer,
                    &i32_of(job.job.quantity),
                    &i64_of(job.position.0),
                ],
            )
            .await
            .map_err(pg("record pending"))?;
        let position = if inserted == 1 {
            job.position
        } else {
            let first: i64 = tx
                .query_one(&read, &[&id])
                .await
                .map_err(pg("read position"))?
                .try_get(0)
                .map_err(pg("read position"))?;
            position_of(first)?
        };
        tx.commit().await.map_err(pg("commit pending"))?;
        Ok(position)
    }

    async fn purchase(&self, id: PurchaseId) -> Result<Option<Purchase>, StoreError> {
        // A replica answers only with a final purchase: see `super::replica` for why a buyer
        // then never sees one go backwards.
        if let Some(replica) = &self.replica {
            match read_purchase(&replica.pool, id).await {
                Ok(Some(p)) if p.status != PurchaseStatus::Pending => {
                    replica.counted("final");
                    return Ok(Some(p));
                }
                Ok(_) => replica.counted("primary"),
                Err(e) => {
                    replica.counted("error");
                    tracing::debug!(error = %e, "replica read failed; reading the primary");
                }
            }
        }
        read_purchase(&self.inner, id).await
    }

    async fn decide_batch(&self, jobs: &[QueuedJob]) -> Result<Vec<Decision>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.pooled().await?;
        let st = DecideStatements::prepare(&mut c).await?;
        let tx = c
            .client()?
            .transaction()
            .await
            .map_err(pg("begin decide"))?;
        let decisions = decide_in(&tx, &st, jobs).await?;
        tx.commit().await.map_err(pg("commit decide"))?;
        Ok(decisions)
    }

    async fn mark_failed(&self, job: &QueuedJob) -> Result<PurchaseStatus, StoreError> {
        let mut c = self.pooled().await?;
        let tx = c
            .client()?
            .transaction()
            .await
            .map_err(pg("begin mark failed"))?;
        let has_event = tx
            .query_opt(
                "SELECT id FROM events WHERE id = $1 FOR NO KEY UPDATE",
                &[&job.job.event_id.0],
            )
            .await
            .map_err(pg("lock event"))?
            .is_some();
        let current = tx
            .query_opt(
                "SELECT status, reason FROM purchases WHERE id = $1",
                &[&job.job.purchase_id.to_string()],
            )
            .await
            .map_err(pg("read purchase"))?;
        if let Some(r) = current {
            let status: String = r.try_get(0).map_err(pg("read status"))?;
            let reason: Option<String> = r.try_get(1).map_err(pg("read reason"))?;
            let status = parse_status(&status, reason.as_deref())?;
            if status.is_final() {
                return Ok(status);
            }
        }
        if has_event {
            tx.execute(
                "INSERT INTO purchases (id, event_id, buyer, quantity, position, status, reason)
                 VALUES ($1, $2, $3, $4, $5, 'rejected', 'failed')
                 ON CONFLICT (id) DO UPDATE SET status = 'rejected', reason = 'failed'
                 WHERE purchases.status = 'pending'",
                &[
                    &job.job.purchase_id.to_string(),
                    &job.job.event_id.0,
                    &job.job.buyer,
                    &i32_of(job.job.quantity.max(1)),
                    &i64_of(job.position.0),
                ],
            )
            .await
            .map_err(pg("mark failed"))?;
        }
        tx.commit().await.map_err(pg("commit mark failed"))?;
        Ok(PurchaseStatus::Rejected(RejectReason::Failed))
    }

    async fn event_purchases(
        &self,
        event: EventId,
        limit: u32,
    ) -> Result<Vec<Purchase>, StoreError> {
        let mut c = self.pooled().await?;
        c.client()?
            .query(
                &format!(
                    "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE event_id = $1
                     ORDER BY position LIMIT $2"
                ),
                &[&event.0, &i64::from(limit)],
            )
            .await
            .map_err(pg("read purchases"))?
            .iter()
            .map(purchase_of)
            .collect()
    }

    async fn seal_line(&self, event: EventId, size: u64) -> Result<u64, StoreError> {
        let mut c = self.pooled().await?;
        let seal = c.stmt(SQL_SEAL_LINE).await?;
        let sealed = c
            .client()?
            .query_opt(&seal, &[&event.0, &i64_of(size)])
            .await
            .map_err(pg("seal line"))?;
        if let Some(row) = sealed {
            return sealed_size_of(row.try_get(0).map_err(pg("read sealed size"))?);
        }
        // Sealed before, or no room, or no event. A concurrent seal of the same line made the
        // UPDATE wait for its commit and then skip the row; this second statement takes a new
        // snapshot (READ COMMITTED), so it sees that size. Once set it never changes, so
        // reading it outside the UPDATE's transaction is enough.
        let read = c.stmt(SQL_SEALED_SIZE).await?;
        let row = c
            .client()?
            .query_opt(&read, &[&event.0])
            .await
            .map_err(pg("read sealed size"))?
            .map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
            .map_err(pg("read sealed size"))?;
        sealed_on_record(event, row)
    }

    async fn line_pace(&self, event: EventId) -> Result<Option<LinePace>, StoreError> {
        let mut c = self.pooled().await?;
        let read = c.stmt(SQL_LINE_PACE).await?;
        let row = line_pace_row(c.client()?, &read, event).await?;
        pace_on_record(event, row)
    }

    async fn record_line_pace(
        &self,
        event: EventId,
        current: Option<LinePace>,
        next: LinePace,
    ) -> Result<RecordedPace, StoreError> {
        let mut c = self.pooled().await?;
        let read = c.stmt(SQL_LINE_PACE).await?;
        let write = match current {
            None => c.stmt(SQL_INSERT_LINE_PACE).await?,
            Some(_) => c.stmt(SQL_UPDATE_LINE_PACE).await?,
        };
        let tx = c
            .client()?
            .transaction()
            .await
            .map_err(pg("begin line pace"))?;
        // No such event, or no room: answered before anything is written.
        pace_on_record(event, line_pace_row(&tx, &read, event).await?)?;
        let (at_ms, admitted, per_s, per_s_before) = line_pace_columns(&next);
        let written = match current.as_ref().map(line_pace_columns) {
            None => {
                tx.execute(
                    &write,
                    &[&event.0, &at_ms, &admitted, &per_s, &per_s_before],
                )
                .await
            }
            Some((was_at_ms, was_admitted, was_per_s, _)) => {
                tx.execute(
                    &write,
                    &[
                        &event.0,
                        &at_ms,
                        &admitted,
                        &per_s,
                        &per_s_before,
                        &was_at_ms,
                        &was_admitted,
                        &was_per_s,
                    ],
                )
                .await
            }
        }
        .map_err(pg("record line pace"))?;
        // A concurrent recorder's INSERT or UPDATE made this one wait for its commit and then
        // skip the row; this read takes a new snapshot (READ COMMITTED), so it sees the winner.
        let row = line_pace_row(&tx, &read, event).await?;
        tx.commit().await.map_err(pg("commit line pace"))?;
        Ok(RecordedPace {
            pace: recorded_pace(event, current, row)?,
            won: written == 1,
        })
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let mut c = self.pooled().await?;
        c.client()?
            .batch_execute("SELECT 1")
            .await
            .map_err(pg("ping"))
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;
