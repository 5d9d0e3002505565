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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use tokio_postgres::Client;

use prometheus_client::registry::Registry;

use super::contract::Store;
use super::error::StoreError;
use super::pg_pool::{Pool, Pooled, connect_one, pg};
use super::replica::{Replica, ReplicaMetrics};
use super::rows::{
    i64_of, parse_status, position_of, sealed_on_record, sealed_size_of, to_purchase,
    waiting_room_columns, waiting_room_of, window_columns, window_of,
};
use super::schema;
use crate::domain::{
    Decision, Event, EventId, EventSpec, Ledger, Position, Purchase, PurchaseId, PurchaseJob,
    PurchaseStatus, QueuedJob, RejectReason, WaitingRoom, decide_in_order,
};

/// Serializes concurrent migrators (several APIs starting at once).
pub(super) const MIGRATION_LOCK: i64 = 0x7469_636b_6574;

fn u32_of(v: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt {
        what: format!("{what} = {v}"),
    })
}

pub(super) fn i32_of(v: u32) -> i32 {
    // Quantities and ticket counts are validated far below 2^31.
    i32::try_from(v).unwrap_or(i32::MAX)
}

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
         line_admit_per_s, line_seed, line_sealed_size, line_pow_bits"
    };
}
pub(super) use event_columns;

/// An event, by id.
const SQL_READ_EVENT: &str = concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1");
/// A new event, with an id from the table's sequence.
const SQL_INSERT_EVENT: &str = concat!(
    "INSERT INTO events (name, tickets, max_per_buyer, opens_at_ms, closes_at_ms,
                         line_admit_per_s, line_seed, line_sealed_size, line_pow_bits)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
    event_columns!()
);
/// Seals an event's line: sets its pre-queue size unless one is on record (or it has no room).
const SQL_SEAL_LINE: &str = "UPDATE events SET line_sealed_size = $2
     WHERE id = $1 AND line_sealed_size IS NULL AND line_admit_per_s IS NOT NULL
     RETURNING line_sealed_size";
/// What an earlier seal left: whether the event has a room, and its size on record.
const SQL_SEALED_SIZE: &str =
    "SELECT line_admit_per_s IS NOT NULL, line_sealed_size FROM events WHERE id = $1";

/// An event from a row of the columns `event_columns!` names.
pub(super) fn event_of(r: &tokio_postgres::Row) -> Result<Event, StoreError> {
    Ok(Event {
        id: EventId(r.try_get(0).map_err(pg("read event.id"))?),
        name: r.try_get(1).map_err(pg("read event.name"))?,
        tickets: u32_of(
            r.try_get(2).map_err(pg("read event.tickets"))?,
            "events.tickets",
        )?,
        max_per_buyer: u32_of(
            r.try_get(3).map_err(pg("read event.max_per_buyer"))?,
            "events.max_per_buyer",
        )?,
        sold: u32_of(r.try_get(4).map_err(pg("read event.sold"))?, "events.sold")?,
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
        )?,
    })
}

/// A waiting room as its PostgreSQL columns: [`waiting_room_columns`] with the rate as the
/// `INTEGER` it is stored as.
pub(super) fn pg_waiting_room_columns(
    room: Option<&WaitingRoom>,
) -> (Option<i32>, Option<&[u8]>, Option<i64>, i32) {
    let c = waiting_room_columns(room);
    (c.admit_per_s.map(i32_of), c.seed, c.sealed_size, c.pow_bits)
}

/// New decisions as column arrays, written with one `INSERT ... SELECT FROM UNNEST`.
#[derive(Default)]
struct DecisionRows {
    ids: Vec<String>,
    events: Vec<i64>,
    buyers: Vec<String>,
    quantities: Vec<i32>,
    positions: Vec<i64>,
    statuses: Vec<String>,
    reasons: Vec<Option<String>>,
}

// The deciding transaction's statements (prepared once per connection).
const SQL_LOCK_EVENTS: &str =
    "SELECT id, tickets, max_per_buyer, sold FROM events WHERE id = ANY($1)
                 ORDER BY id FOR NO KEY UPDATE";
const SQL_BUYER_TOTALS: &str = "SELECT t.event_id, t.buyer, t.confirmed FROM buyer_totals t
                 JOIN UNNEST($1::bigint[], $2::text[]) AS k(event_id, buyer)
                   ON t.event_id = k.event_id AND t.buyer = k.buyer";
const SQL_DECISIONS: &str = "SELECT id, status, reason FROM purchases WHERE id = ANY($1::text[])";
const SQL_UPDATE_SOLD: &str = "UPDATE events AS e SET sold = v.sold
             FROM UNNEST($1::bigint[], $2::int[]) AS v(id, sold)
             WHERE e.id = v.id AND e.sold <> v.sold";
const SQL_WRITE_TOTALS: &str =
    "INSERT INTO buyer_totals (event_id, buyer, confirmed, max_per_buyer)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::int[])
                 ON CONFLICT (event_id, buyer) DO UPDATE SET confirmed = EXCLUDED.confirmed";
const SQL_WRITE_DECISIONS: &str =
    "INSERT INTO purchases (id, event_id, buyer, quantity, position, status, reason)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::int[],
                                      $5::bigint[], $6::text[], $7::text[])
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason
                 WHERE purchases.status = 'pending'";

/// `sell_now`'s place in line: the one on record for this purchase id, else the next one.
const SQL_NEXT_POSITION: &str = "SELECT COALESCE(
                 (SELECT position FROM purchases WHERE id = $1),
                 (SELECT MAX(position) + 1 FROM purchases WHERE event_id = $2),
                 0)";
const PURCHASE_COLUMNS: &str = "id, event_id, buyer, quantity, position, status, reason";

/// The deciding transaction's statements, prepared on one connection.
struct DecideStatements {
    lock_events: tokio_postgres::Statement,
    buyer_totals: tokio_postgres::Statement,
    decisions_read: tokio_postgres::Statement,
    update_sold: tokio_postgres::Statement,
    write_totals: tokio_postgres::Statement,
    write_decisions: tokio_postgres::Statement,
}

impl DecideStatements {
    async fn prepare(c: &mut Pooled) -> Result<Self, StoreError> {
        Ok(Self {
            lock_events: c.stmt(SQL_LOCK_EVENTS).await?,
            buyer_totals: c.stmt(SQL_BUYER_TOTALS).await?,
            decisions_read: c.stmt(SQL_DECISIONS).await?,
            update_sold: c.stmt(SQL_UPDATE_SOLD).await?,
            write_totals: c.stmt(SQL_WRITE_TOTALS).await?,
            write_decisions: c.stmt(SQL_WRITE_DECISIONS).await?,
        })
    }
}

/// Decides `jobs` inside `tx` (see the module docs on locking); the caller commits.
async fn decide_in(
    tx: &tokio_postgres::Transaction<'_>,
    st: &DecideStatements,
    jobs: &[QueuedJob],
) -> Result<Vec<Decision>, StoreError> {
    let mut ledger = Ledger::new();
    let events: Vec<i64> = jobs
        .iter()
        .map(|j| j.job.event_id.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut max_per_buyer = HashMap::new();
    for r in tx
        .query(&st.lock_events, &[&events])
        .await
        .map_err(pg("lock events"))?
    {
        let id = EventId(r.try_get(0).map_err(pg("read event.id"))?);
        let max = u32_of(
            r.try_get(2).map_err(pg("read max"))?,
            "events.max_per_buyer",
        )?;
        ledger.add_event(
            id,
            u32_of(r.try_get(1).map_err(pg("read tickets"))?, "events.tickets")?,
            max,
            u32_of(r.try_get(3).map_err(pg("read sold"))?, "events.sold")?,
        );
        max_per_buyer.insert(id, max);
    }

    let pairs: HashSet<(i64, &str)> = jobs
        .iter()
        .map(|j| (j.job.event_id.0, j.job.buyer.as_str()))
        .collect();
    let (pe, pb): (Vec<i64>, Vec<&str>) = pairs.into_iter().unzip();
    for r in tx
        .query(&st.buyer_totals, &[&pe, &pb])
        .await
        .map_err(pg("read buyer totals"))?
    {
        let e = EventId(r.try_get(0).map_err(pg("read total.event_id"))?);
        let b: &str = r.try_get(1).map_err(pg("read total.buyer"))?;
        let n = u32_of(
            r.try_get(2).map_err(pg("read total"))?,
            "buyer_totals.confirmed",
        )?;
        ledger.add_buyer_total(e, b, n);
    }

    let ids: Vec<String> = jobs.iter().map(|j| j.job.purchase_id.to_string()).collect();
    for r in tx
        .query(&st.decisions_read, &[&ids])
        .await
        .map_err(pg("read decisions"))?
    {
        let id: String = r.try_get(0).map_err(pg("read purchase.id"))?;
        let status: String = r.try_get(1).map_err(pg("read purchase.status"))?;
        let reason: Option<String> = r.try_get(2).map_err(pg("read purchase.reason"))?;
        let id: PurchaseId = id.parse().map_err(|_| StoreError::Corrupt {
            what: format!("purchases.id = {id:?}"),
        })?;
        ledger.add_decided(id, parse_status(&status, reason.as_deref())?);
    }

    let decisions = decide_in_order(&mut ledger, jobs);

    let (se, ss): (Vec<i64>, Vec<i32>) =
        ledger.sold_counts().map(|(e, s)| (e.0, i32_of(s))).unzip();
    tx.execute(&st.update_sold, &[&se, &ss])
        .await
        .map_err(pg("update sold"))?;

    let mut totals: (Vec<i64>, Vec<String>, Vec<i32>, Vec<i32>) = Default::default();
    let mut seen = HashSet::new();
    let mut rows = DecisionRows::default();
    for (j, d) in jobs.iter().zip(&decisions) {
        if !d.is_new {
            continue;
        }
        let e = j.job.event_id;
        if d.status == PurchaseStatus::Confirmed && seen.insert((e, j.job.buyer.as_str())) {
            totals.0.push(e.0);
            totals.1.push(j.job.buyer.clone());
            totals.2.push(i32_of(ledger.buyer_total(e, &j.job.buyer)));
            totals
                .3
                .push(i32_of(max_per_buyer.get(&e).copied().unwrap_or(0)));
        }
        rows.ids.push(j.job.purchase_id.to_string());
        rows.events.push(e.0);
        rows.buyers.push(j.job.buyer.clone());
        rows.quantities.push(i32_of(j.job.quantity));
        rows.positions.push(i64_of(j.position.0));
        rows.statuses.push(d.status.as_str().to_owned());
        rows.reasons.push(
            d.status
                .reason()
                .map(|r| RejectReason::as_str(r).to_owned()),
        );
    }
    if !totals.0.is_empty() {
        tx.execute(
            &st.write_totals,
            &[&totals.0, &totals.1, &totals.2, &totals.3],
        )
        .await
        .map_err(pg("write buyer totals"))?;
    }
    if !rows.ids.is_empty() {
        tx.execute(
            &st.write_decisions,
            &[
                &rows.ids,
                &rows.events,
                &rows.buyers,
                &rows.quantities,
                &rows.positions,
                &rows.statuses,
                &rows.reasons,
            ],
        )
        .await
        .map_err(pg("write decisions"))?;
    }
    Ok(decisions)
}

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
        let (admit_per_s, seed, sealed_size, pow_bits) =
            pg_waiting_room_columns(spec.waiting_room.as_ref());
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
                    &seed,
                    &sealed_size,
                    &pow_bits,
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

    async fn check_ready(&self) -> Result<(), StoreError> {
        let mut c = self.pooled().await?;
        c.client()?
            .batch_execute("SELECT 1")
            .await
            .map_err(pg("ping"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UnixMillis;

    /// The test server's URL and a fresh schema on it, as the migrations before `version` left
    /// it, with a raw session in that schema; `None` (with the reason printed) without a server.
    async fn schema_before(version: i64) -> Option<(String, String, Client)> {
        let Ok(url) = std::env::var("TICKET_TEST_POSTGRES_URL") else {
            eprintln!("skipped: TICKET_TEST_POSTGRES_URL is not set (PostgreSQL store tests)");
            return None;
        };
        let name = format!("tk_test_{}", uuid::Uuid::new_v4().simple());
        connect_one(&url, None)
            .await
            .unwrap()
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let raw = connect_one(&url, Some(&name)).await.unwrap();
        raw.batch_execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY)")
            .await
            .unwrap();
        for (v, sql) in schema::POSTGRES.iter().filter(|(v, _)| *v < version) {
            raw.batch_execute(sql).await.unwrap();
            raw.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[v])
                .await
                .unwrap();
        }
        Some((url, name, raw))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_before_sale_windows_opens_with_its_events_always_on_sale() {
        // A database as the migrations before the window columns left it, with an event in it.
        let Some((url, name, raw)) = schema_before(2).await else {
            return;
        };
        raw.batch_execute(
            "INSERT INTO events (name, tickets, max_per_buyer, sold) VALUES ('old', 10, 4, 2)",
        )
        .await
        .unwrap();

        let store = PostgresStore::connect_in_schema(&url, &name, 2)
            .await
            .unwrap();
        let old = crate::store::upgrade_checks::events_from_before_sale_windows(&store).await;

        // The migrated table refuses a window that closes before it opens, and only that.
        for (opens_at_ms, closes_at_ms, is_accepted) in [
            (Some(2_i64), Some(1_i64), false),
            (Some(2), Some(2), false),
            (Some(2), Some(3), true),
            (Some(2), None, true),
            (None, Some(1), true),
            (None, None, true),
        ] {
            let updated = raw
                .execute(
                    "UPDATE events SET opens_at_ms = $1, closes_at_ms = $2 WHERE id = 1",
                    &[&opens_at_ms, &closes_at_ms],
                )
                .await;
            assert_eq!(
                updated.is_ok(),
                is_accepted,
                "{opens_at_ms:?} {closes_at_ms:?}: {updated:?}"
            );
        }

        // A second open finds nothing left to do, and the old event is as it was.
        let again = PostgresStore::connect_in_schema(&url, &name, 2)
            .await
            .unwrap();
        assert_eq!(again.event(EventId(1)).await.unwrap().unwrap(), old);
        let versions: i64 = raw
            .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(versions, i64::try_from(schema::POSTGRES.len()).unwrap());
        store.drop_schema().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_before_waiting_rooms_opens_with_its_events_without_one() {
        // A database as the migrations before the room columns left it, with events in it.
        let Some((url, name, raw)) = schema_before(3).await else {
            return;
        };
        let opens = UnixMillis(1_798_135_200_000);
        raw.batch_execute(
            "INSERT INTO events (name, tickets, max_per_buyer, sold) VALUES ('old', 10, 4, 2)",
        )
        .await
        .unwrap();
        raw.execute(
            "INSERT INTO events (name, tickets, max_per_buyer, opens_at_ms)
             VALUES ('windowed', 5, 1, $1)",
            &[&opens.0],
        )
        .await
        .unwrap();

        let store = PostgresStore::connect_in_schema(&url, &name, 2)
            .await
            .unwrap();
        let (old, windowed) =
            crate::store::upgrade_checks::events_from_before_waiting_rooms(&store, opens).await;

        // The migrated table keeps a room whole: a rate of at least 1 and a 32-byte seed, both
        // or neither, and a sealed size of at least 0 only with a room.
        let seed = |len: usize| Some(vec![1_u8; len]);
        for (admit_per_s, line_seed, sealed_size, is_accepted) in [
            (None, None, None, true),
            (Some(5_i32), seed(32), None, true),
            (Some(5), seed(32), Some(0_i64), true),
            (Some(5), seed(32), Some(7), true),
            (Some(1_000_000), seed(32), None, true),
            (Some(0), seed(32), None, false),
            (Some(-1), seed(32), None, false),
            (Some(5), None, None, false),
            (None, seed(32), None, false),
            (Some(5), seed(31), None, false),
            (Some(5), seed(33), None, false),
            (Some(5), seed(0), None, false),
            (None, None, Some(3), false),
            (Some(5), seed(32), Some(-1), false),
        ] {
            let updated = raw
                .execute(
                    "UPDATE events SET line_admit_per_s = $1, line_seed = $2,
                                       line_sealed_size = $3
                     WHERE id = 1",
                    &[&admit_per_s, &line_seed, &sealed_size],
                )
                .await;
            let seed_len = line_seed.as_ref().map(Vec::len);
            assert_eq!(
                updated.is_ok(),
                is_accepted,
                "{admit_per_s:?} {seed_len:?} {sealed_size:?}: {updated:?}"
            );
        }
        raw.batch_execute(
            "UPDATE events SET line_admit_per_s = NULL, line_seed = NULL, line_sealed_size = NULL
             WHERE id = 1",
        )
        .await
        .unwrap();

        // A second open finds nothing left to do, and the old events are as they were.
        let again = PostgresStore::connect_in_schema(&url, &name, 2)
            .await
            .unwrap();
        assert_eq!(again.event(EventId(1)).await.unwrap().unwrap(), old);
        assert_eq!(again.event(EventId(2)).await.unwrap().unwrap(), windowed);
        let versions: i64 = raw
            .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(versions, i64::try_from(schema::POSTGRES.len()).unwrap());
        store.drop_schema().await.unwrap();
    }
}
