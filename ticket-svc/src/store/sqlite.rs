//! The SQLite store: one writer thread and a few reader connections on one WAL database file.
//!
//! Writes (every method that changes anything) go to a dedicated writer thread that
//! group-commits (see `group_commit`): one fsync covers many API requests and worker batches,
//! so `synchronous=FULL` (a committed decision survives power loss) stays cheap.
//!
//! Reads take one of a few reader connections' async lock first and only then move to the
//! blocking pool, so waiting callers cost no threads and the runtime never runs SQLite.
//! `busy_timeout` lets several processes share the file.
//!
//! `sale` holds the SQL the writer runs for a sale; `held`, the pending rows kept in memory
//! when the store is opened with [`PendingRows::InMemory`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{Mutex, mpsc};

use super::contract::Store;
use super::error::{StoreError, sq};
use super::group_commit::{Durability, Undo, WriteOp, spawn_writer, write};
use super::pending::{OnRecord, PendingBuffer, PendingRows};
use super::rows::{
    PurchaseRow, i64_of, sealed_on_record, to_purchase, u32_of, waiting_room_columns,
    waiting_room_of, window_columns, window_of,
};
use super::schema;
use crate::domain::{
    Decision, Event, EventId, EventSpec, Position, Purchase, PurchaseId, PurchaseJob,
    PurchaseStatus, QueuedJob,
};

mod held;
mod sale;

use sale::{
    decide_batch_sync, insert_pending, mark_failed_sync, position_on_record, sell_now_sync,
};

const READERS: usize = 4;
const BUSY_TIMEOUT_MS: u32 = 5_000;
/// Page cache per connection, in KiB (SQLite's default is 2 MiB). A rush's purchases table and
/// indexes outgrow 2 MiB within seconds, and then every insert's index lookup re-read pages
/// from the OS (about one `pread` per purchase); 32 MiB holds a few hundred thousand purchases.
/// Pages are allocated as they are used, so a small database costs no more.
const CACHE_KIB: u32 = 32 * 1024;

/// The SQLite [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writes: mpsc::Sender<Box<dyn WriteOp>>,
    readers: Vec<Arc<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    /// Pending rows held in memory ([`PendingRows::InMemory`]); `None` writes them at once.
    pending: Option<PendingBuffer>,
    /// With `pending`: which purchase ids may be on record.
    on_record: Option<OnRecord>,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(sq("open database"))?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))
        .map_err(sq("set busy_timeout"))?;
    let mode = enable_wal(&conn)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable {
            reason: format!("{} cannot use WAL (journal_mode = {mode})", path.display()),
        });
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -{CACHE_KIB};"
    ))
    .map_err(sq("set pragmas"))?;
    // Room for every statement the store and the group commit prepare, so none is re-parsed.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Switches to WAL. Changing the journal mode needs the file to itself, and SQLite reports a
/// second process doing the same at that moment (an API and a worker starting together on a new
/// database) as SQLITE_BUSY without consulting the busy handler; so retry within the same bound.
fn enable_wal(conn: &Connection) -> Result<String, StoreError> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into());
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(sq("enable WAL")),
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)",
    )
    .map_err(sq("create schema_migrations"))?;
    for (version, sql) in schema::SQLITE {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq("begin migration"))?;
        let is_done: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(sq("read schema_migrations"))?;
        if !is_done {
            tx.execute_batch(sql).map_err(sq("apply migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES (?1)",
                [version],
            )
            .map_err(sq("record migration"))?;
        }
        tx.commit().map_err(sq("commit migration"))?;
    }
    Ok(())
}

/// Every purchase id on record, for [`OnRecord`].
fn ids_on_record(c: &Connection) -> Result<OnRecord, StoreError> {
    let count: i64 = c
        .query_row("SELECT count(*) FROM purchases", [], |r| r.get(0))
        .map_err(sq("count purchases"))?;
    let on_record = OnRecord::new(usize::try_from(count).unwrap_or(0));
    let mut st = c
        .prepare("SELECT id FROM purchases")
        .map_err(sq("prepare purchase ids read"))?;
    let mut rows = st.query([]).map_err(sq("read purchase ids"))?;
    while let Some(row) = rows.next().map_err(sq("read purchase id"))? {
        let id: String = row.get(0).map_err(sq("read purchase id"))?;
        let id = id.parse::<PurchaseId>().map_err(|_| StoreError::Corrupt {
            what: format!("purchases.id = {id:?}"),
        })?;
        on_record.note([id]);
    }
    Ok(on_record)
}

async fn run<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    let mut guard = Arc::clone(conn).lock_owned().await;
    tokio::task::spawn_blocking(move || f(&mut guard))
        .await
        .map_err(|e| StoreError::Unavailable {
            reason: format!("sqlite task ended: {e}"),
        })?
}

const EVENT_COLUMNS: &str = "id, name, tickets, max_per_buyer, sold, opens_at_ms, closes_at_ms, \
                             line_admit_per_s, line_seed, line_sealed_size, line_pow_bits";
const PURCHASE_COLUMNS: &str = "id, event_id, buyer, quantity, position, status, reason";

/// An event's columns: id, name, tickets, max_per_buyer, sold, opens_at_ms, closes_at_ms,
/// line_admit_per_s, line_seed, line_sealed_size, line_pow_bits.
type EventRow = (
    i64,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    i64,
);

fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn to_event(
    (
        id,
        name,
        tickets,
        max_per_buyer,
        sold,
        opens_at_ms,
        closes_at_ms,
        line_admit_per_s,
        line_seed,
        line_sealed_size,
        line_pow_bits,
    ): EventRow,
) -> Result<Event, StoreError> {
    Ok(Event {
        id: EventId(id),
        name,
        tickets: u32_of(tickets, "events.tickets")?,
        max_per_buyer: u32_of(max_per_buyer, "events.max_per_buyer")?,
        sold: u32_of(sold, "events.sold")?,
        window: window_of(opens_at_ms, closes_at_ms)?,
        waiting_room: waiting_room_of(
            line_admit_per_s,
            line_seed,
            line_sealed_size,
            line_pow_bits,
        )?,
    })
}

/// Seals an event's line: sets its pre-queue size unless one is on record (or it has no room).
const SQL_SEAL_LINE: &str = "UPDATE events SET line_sealed_size = ?2
     WHERE id = ?1 AND line_sealed_size IS NULL AND line_admit_per_s IS NOT NULL";
/// What sealing left: whether the event has a room, and its size on record.
const SQL_SEALED_SIZE: &str =
    "SELECT line_admit_per_s IS NOT NULL, line_sealed_size FROM events WHERE id = ?1";

fn purchase_row(r: &Row<'_>) -> rusqlite::Result<PurchaseRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies migrations. Pending
    /// rows are written before the API answers, so any number of processes may share the file.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, PendingRows::Written).await
    }

    /// [`SqliteStore::open`], with pending rows kept as `pending` says. With
    /// [`PendingRows::InMemory`], run [`SqliteStore::write_held_rows`] beside the store: it
    /// writes the rows held too long, and all of them at a clean stop.
    pub async fn open_with(
        path: impl AsRef<Path>,
        pending: PendingRows,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if path.as_os_str().is_empty() {
            return Err(StoreError::BadUrl {
                url: "sqlite://".into(),
            });
        }
        let p = path.clone();
        let (writer, readers, on_record) = tokio::task::spawn_blocking(move || {
            // Data lives under a directory that may not exist yet (`./data` by default).
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable {
                    reason: format!("cannot create {}: {e}", dir.display()),
                })?;
            }
            let mut writer = open_connection(&p)?;
            migrate(&mut writer)?;
            let on_record = (pending == PendingRows::InMemory)
                .then(|| ids_on_record(&writer))
                .transpose()?;
            let readers = (0..READERS)
                .map(|_| open_connection(&p))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>((writer, readers, on_record))
        })
        .await
        .map_err(|e| StoreError::Unavailable {
            reason: format!("sqlite open task ended: {e}"),
        })??;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writes: spawn_writer(writer)?,
                readers: readers
                    .into_iter()
                    .map(|c| Arc::new(Mutex::new(c)))
                    .collect(),
                next_reader: AtomicUsize::new(0),
                pending: (pending == PendingRows::InMemory).then(PendingBuffer::default),
                on_record,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn reader(&self) -> &Arc<Mutex<Connection>> {
        let n = self.inner.next_reader.fetch_add(1, Ordering::Relaxed);
        let readers = &self.inner.readers;
        // `open` makes READERS (> 0) readers, so the index is always in range.
        &readers[n % readers.len()]
    }

    /// Decides one purchase now, in one synced transaction, without a queue: takes the next
    /// position in the event's line (or the one on record, for a purchase id seen before) and
    /// decides it with the same rules and code as [`Store::decide_batch`].
    ///
    /// This is the naive one-transaction-per-request design the benchmarks compare the queue
    /// against; the product never calls it.
    pub async fn sell_now(&self, job: &PurchaseJob) -> Result<(Position, Decision), StoreError> {
        let id = job.purchase_id;
        let job = job.clone();
        let sold = self.write(move |c| sell_now_sync(c, &job)).await?;
        self.committed(&[id]);
        Ok(sold)
    }

    /// Runs `f` on the writer thread inside the next group commit; answers once it is on disk.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        write(&self.inner.writes, Durability::Synced, Undo::Savepoint, f).await
    }

    /// A pending row: like `write`, but answered once committed (see `group_commit` on why
    /// pending rows may), and `f` must change the database with one statement at most, after
    /// which nothing can fail ([`Undo::Statement`]).
    async fn write_pending<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        write(&self.inner.writes, Durability::Relaxed, Undo::Statement, f).await
    }

    /// After the rows of `ids` were committed: they are no longer held, and are on record.
    fn committed(&self, ids: &[PurchaseId]) {
        if let Some(buffer) = &self.inner.pending {
            buffer.release(ids.iter().copied());
        }
        if let Some(on_record) = &self.inner.on_record {
            on_record.note(ids.iter().copied());
        }
    }
}

impl Store for SqliteStore {
    async fn create_event(&self, spec: &EventSpec) -> Result<Event, StoreError> {
        let spec = spec.clone();
        self.write(move |c| {
            let (opens_at_ms, closes_at_ms) = window_columns(&spec.window);
            let room = waiting_room_columns(spec.waiting_room.as_ref());
            c.execute(
                "INSERT INTO events (name, tickets, max_per_buyer, opens_at_ms, closes_at_ms,
                                     line_admit_per_s, line_seed, line_sealed_size, line_pow_bits)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    spec.name,
                    spec.tickets,
                    spec.max_per_buyer,
                    opens_at_ms,
                    closes_at_ms,
                    room.admit_per_s,
                    room.seed,
                    room.sealed_size,
                    room.pow_bits
                ],
            )
            .map_err(sq("insert event"))?;
            Ok(Event {
                id: EventId(c.last_insert_rowid()),
                name: spec.name,
                tickets: spec.tickets,
                max_per_buyer: spec.max_per_buyer,
                sold: 0,
                window: spec.window,
                waiting_room: spec.waiting_room,
            })
        })
        .await
    }

    async fn event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        run(self.reader(), move |c| {
            c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))
                .map_err(sq("prepare event read"))?
                .query_row([id.0], event_row)
                .optional()
                .map_err(sq("read event"))?
                .map(to_event)
                .transpose()
        })
        .await
    }

    async fn record_pending(&self, job: &QueuedJob) -> Result<Position, StoreError> {
        if let Some(buffer) = &self.inner.pending {
            // Hold the row (see `pending`), unless full. A minted id cannot be on record yet; one
            // from an Idempotency-Key may be, from long ago, and then its first position stands.
            let id = job.job.purchase_id;
            let may_be_on_record =
                !id.is_minted() && self.inner.on_record.as_ref().is_none_or(|r| r.may_hold(id));
            if may_be_on_record
                && let Some(first) = self
                    .write_pending(move |c| position_on_record(c, id))
                    .await?
            {
                return Ok(first);
            }
            if let Some(position) = buffer.hold(job) {
                return Ok(position);
            }
        }
        let id = job.job.purchase_id;
        let job = job.clone();
        // One statement writes (the INSERT); if it inserted, nothing after it can fail, and if it
        // did not, it changed nothing.
        let first = self
            .write_pending(move |c| {
                if insert_pending(c, &job)? {
                    return Ok(job.position);
                }
                position_on_record(c, id)?.ok_or_else(|| StoreError::Corrupt {
                    what: format!("purchase {id} neither inserted nor on record"),
                })
            })
            .await?;
        self.committed(&[id]);
        Ok(first)
    }

    async fn purchase(&self, id: PurchaseId) -> Result<Option<Purchase>, StoreError> {
        let on_record = self.purchase_on_record(id).await?;
        let Some(buffer) = &self.inner.pending else {
            return Ok(on_record);
        };
        if on_record.is_some() {
            return Ok(on_record);
        }
        if let Some(held) = buffer.get(id) {
            return Ok(Some(held));
        }
        // Committed, then released, between the two looks: on record now.
        self.purchase_on_record(id).await
    }

    async fn decide_batch(&self, jobs: &[QueuedJob]) -> Result<Vec<Decision>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<PurchaseId> = if self.inner.pending.is_some() {
            jobs.iter().map(|j| j.job.purchase_id).collect()
        } else {
            Vec::new()
        };
        let jobs = jobs.to_vec();
        let decisions = self.write(move |c| decide_batch_sync(c, &jobs)).await?;
        self.committed(&ids);
        Ok(decisions)
    }

    async fn mark_failed(&self, job: &QueuedJob) -> Result<PurchaseStatus, StoreError> {
        let id = job.job.purchase_id;
        let job = job.clone();
        let status = self.write(move |c| mark_failed_sync(c, &job)).await?;
        self.committed(&[id]);
        Ok(status)
    }

    async fn event_purchases(
        &self,
        event: EventId,
        limit: u32,
    ) -> Result<Vec<Purchase>, StoreError> {
        // The held rows first: one released meanwhile was committed before, so SQLite has it.
        let held = self
            .inner
            .pending
            .as_ref()
            .map(|b| b.of_event(event))
            .unwrap_or_default();
        let mut out = self.event_purchases_on_record(event, limit).await?;
        if held.is_empty() {
            return Ok(out);
        }
        let on_record: HashSet<PurchaseId> = out.iter().map(|p| p.id).collect();
        out.extend(held.into_iter().filter(|p| !on_record.contains(&p.id)));
        out.sort_by_key(|p| p.position);
        out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(out)
    }

    async fn seal_line(&self, event: EventId, size: u64) -> Result<u64, StoreError> {
        // On the writer thread, so every seal is serialized there; synced, since every API
        // instance answers its line with the size on record.
        self.write(move |c| {
            c.prepare_cached(SQL_SEAL_LINE)
                .map_err(sq("prepare seal line"))?
                .execute(params![event.0, i64_of(size)])
                .map_err(sq("seal line"))?;
            let row = c
                .prepare_cached(SQL_SEALED_SIZE)
                .map_err(sq("prepare sealed size read"))?
                .query_row([event.0], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(sq("read sealed size"))?;
            sealed_on_record(event, row)
        })
        .await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        run(self.reader(), |c| {
            c.query_row("SELECT 1", [], |_| Ok(())).map_err(sq("ping"))
        })
        .await
    }
}

impl SqliteStore {
    async fn purchase_on_record(&self, id: PurchaseId) -> Result<Option<Purchase>, StoreError> {
        run(self.reader(), move |c| {
            c.prepare_cached(&format!(
                "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE id = ?1"
            ))
            .map_err(sq("prepare purchase read"))?
            .query_row([id.to_string()], purchase_row)
            .optional()
            .map_err(sq("read purchase"))?
            .map(to_purchase)
            .transpose()
        })
        .await
    }

    async fn event_purchases_on_record(
        &self,
        event: EventId,
        limit: u32,
    ) -> Result<Vec<Purchase>, StoreError> {
        run(self.reader(), move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE event_id = ?1
                     ORDER BY position LIMIT ?2"
                ))
                .map_err(sq("prepare purchases read"))?;
            let rows = st
                .query_map(params![event.0, limit], purchase_row)
                .map_err(sq("read purchases"))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(to_purchase(row.map_err(sq("read purchase row"))?)?);
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opcodes of `sql` as SQLite would run it on `conn`.
    fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN {sql}"))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn writing_a_purchase_builds_no_temporary_btree() {
        // Every purchase is written twice under a rush (pending, then decided); a CHECK with
        // `IN (...)` made SQLite build and zero two temporary b-trees per write.
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("t.db")).unwrap();
        migrate(&mut conn).unwrap();
        for sql in [
            "INSERT INTO purchases (id, event_id, buyer, quantity, position, status)
             VALUES ('p', 1, 'b', 1, 0, 'pending') ON CONFLICT (id) DO NOTHING",
            "INSERT INTO purchases (id, event_id, buyer, quantity, position, status, reason)
             VALUES ('p', 1, 'b', 1, 0, 'rejected', 'sold_out')
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason
             WHERE purchases.status = 'pending'",
            "UPDATE purchases SET status = 'rejected', reason = 'failed' WHERE id = 'p'",
        ] {
            let ops = opcodes(&conn, sql);
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{sql}: {ops:?}"
            );
        }
    }

    #[test]
    fn migrating_a_version_1_database_keeps_its_purchases_and_their_checks() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("t.db")).unwrap();
        // A database as version 1 left it, with a sale in it.
        let (version, v1) = schema::SQLITE[0];
        assert_eq!(version, 1);
        conn.execute_batch(v1).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY);
             INSERT INTO schema_migrations (version) VALUES (1);
             INSERT INTO events (name, tickets, max_per_buyer, sold) VALUES ('e', 10, 4, 2);
             INSERT INTO purchases (id, event_id, buyer, quantity, position, status, reason)
             VALUES ('a', 1, 'x', 2, 0, 'confirmed', NULL),
                    ('b', 1, 'y', 1, 1, 'rejected', 'limit_exceeded'),
                    ('c', 1, 'z', 1, 2, 'pending', NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(String, i64, String, Option<String>)> = conn
            .prepare("SELECT id, position, status, reason FROM purchases ORDER BY position")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("a".into(), 0, "confirmed".into(), None),
                (
                    "b".into(),
                    1,
                    "rejected".into(),
                    Some("limit_exceeded".into())
                ),
                ("c".into(), 2, "pending".into(), None),
            ]
        );
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM purchases WHERE event_id = 1 ORDER BY position",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("purchases_by_event"), "{plan}");
        // The checks still hold, each one.
        for bad in [
            "('d', 1, 'w', 1, 3, 'sold', NULL)",
            "('d', 1, 'w', 1, 3, 'rejected', 'bored')",
            "('d', 1, 'w', 1, 3, 'rejected', NULL)",
            "('d', 1, 'w', 1, 3, 'confirmed', 'sold_out')",
            "('d', 1, 'w', 0, 3, 'pending', NULL)",
            "('d', 1, 'w', 1, -1, 'pending', NULL)",
            "('d', 2, 'w', 1, 3, 'pending', NULL)",
        ] {
            let refused = conn.execute(
                &format!(
                    "INSERT INTO purchases (id, event_id, buyer, quantity, position, status, reason)
                     VALUES {bad}"
                ),
                [],
            );
            assert!(refused.is_err(), "{bad} was stored");
        }
        // And a second open finds nothing left to do.
        migrate(&mut conn).unwrap();
        let versions: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, i64::try_from(schema::SQLITE.len()).unwrap());
    }

    /// A database at `path` as the migrations before `version` left it.
    fn database_before(path: &std::path::Path, version: i64) -> Connection {
        let conn = open_connection(path).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
            .unwrap();
        for (v, sql) in schema::SQLITE.iter().filter(|(v, _)| *v < version) {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations (version) VALUES (?1)", [v])
                .unwrap();
        }
        conn
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_before_sale_windows_opens_with_its_events_always_on_sale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // A database as the migrations before the window columns left it, with an event in it.
        {
            let conn = database_before(&path, 3);
            conn.execute(
                "INSERT INTO events (name, tickets, max_per_buyer, sold) VALUES ('old', 10, 4, 2)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let old = crate::store::upgrade_checks::events_from_before_sale_windows(&store).await;

        // The migrated table refuses a window that closes before it opens, and only that.
        let raw = Connection::open(&path).unwrap();
        for (opens_at_ms, closes_at_ms, is_accepted) in [
            (Some(2_i64), Some(1_i64), false),
            (Some(2), Some(2), false),
            (Some(2), Some(3), true),
            (Some(2), None, true),
            (None, Some(1), true),
            (None, None, true),
        ] {
            let updated = raw.execute(
                "UPDATE events SET opens_at_ms = ?1, closes_at_ms = ?2 WHERE id = 1",
                params![opens_at_ms, closes_at_ms],
            );
            assert_eq!(
                updated.is_ok(),
                is_accepted,
                "{opens_at_ms:?} {closes_at_ms:?}: {updated:?}"
            );
        }
        drop(store);

        // A second open finds nothing left to do, and the old event is as it was.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.event(EventId(1)).await.unwrap().unwrap(), old);
        let versions: i64 = raw
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, i64::try_from(schema::SQLITE.len()).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_before_waiting_rooms_opens_with_its_events_without_one() {
        use crate::domain::UnixMillis;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let opens = UnixMillis(1_798_135_200_000);
        // A database as the migrations before the room columns left it, with events in it.
        {
            let conn = database_before(&path, 4);
            conn.execute(
                "INSERT INTO events (name, tickets, max_per_buyer, sold) VALUES ('old', 10, 4, 2)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO events (name, tickets, max_per_buyer, opens_at_ms)
                 VALUES ('windowed', 5, 1, ?1)",
                [opens.0],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let (old, windowed) =
            crate::store::upgrade_checks::events_from_before_waiting_rooms(&store, opens).await;

        // The migrated table keeps a room whole: a rate of at least 1 and a 32-byte seed, both
        // or neither, and a sealed size of at least 0 only with a room.
        let raw = Connection::open(&path).unwrap();
        let seed = |len: usize| Some(vec![1_u8; len]);
        for (admit_per_s, line_seed, sealed_size, is_accepted) in [
            (None, None, None, true),
            (Some(5_i64), seed(32), None, true),
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
            let updated = raw.execute(
                "UPDATE events SET line_admit_per_s = ?1, line_seed = ?2, line_sealed_size = ?3
                 WHERE id = 1",
                params![admit_per_s, line_seed, sealed_size],
            );
            let seed_len = line_seed.as_ref().map(Vec::len);
            assert_eq!(
                updated.is_ok(),
                is_accepted,
                "{admit_per_s:?} {seed_len:?} {sealed_size:?}: {updated:?}"
            );
        }
        // A seed must be bytes: 32 characters of text are not a seed.
        let text_seed = raw.execute(
            "UPDATE events SET line_admit_per_s = 5, line_seed = ?1 WHERE id = 1",
            ["x".repeat(32)],
        );
        assert!(text_seed.is_err(), "{text_seed:?}");
        raw.execute(
            "UPDATE events SET line_admit_per_s = NULL, line_seed = NULL, line_sealed_size = NULL
             WHERE id = 1",
            [],
        )
        .unwrap();
        drop(store);

        // A second open finds nothing left to do, and the old events are as they were.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.event(EventId(1)).await.unwrap().unwrap(), old);
        assert_eq!(store.event(EventId(2)).await.unwrap().unwrap(), windowed);
        let versions: i64 = raw
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(versions, i64::try_from(schema::SQLITE.len()).unwrap());
    }

    #[test]
    fn a_stored_room_that_breaks_the_rules_reads_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("t.db")).unwrap();
        migrate(&mut conn).unwrap();
        // Faster than the domain admits: the CHECK cannot see it, the domain can.
        conn.execute(
            "INSERT INTO events (name, tickets, max_per_buyer, line_admit_per_s, line_seed)
             VALUES ('e', 1, 1, 1000001, zeroblob(32))",
            [],
        )
        .unwrap();
        let row = conn
            .query_row(
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = 1"),
                [],
                event_row,
            )
            .unwrap();
        let err = to_event(row).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        // The error names the seed's length, never its bytes.
        assert!(err.to_string().contains("line_seed = 32 bytes,"), "{err}");
    }

    #[test]
    fn a_stored_window_that_breaks_the_rules_reads_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("t.db")).unwrap();
        migrate(&mut conn).unwrap();
        // Before the year 2000: the CHECK cannot see it, the domain can.
        conn.execute(
            "INSERT INTO events (name, tickets, max_per_buyer, opens_at_ms) VALUES ('e', 1, 1, 0)",
            [],
        )
        .unwrap();
        let row = conn
            .query_row(
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = 1"),
                [],
                event_row,
            )
            .unwrap();
        assert!(matches!(to_event(row), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn processes_opening_one_new_database_at_once_all_get_wal() {
        // An API and a worker starting together on a new database file: each switches it to
        // WAL and migrates. Several rounds of eight openers at one instant on a fresh file.
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tickets.db");
            let start = Arc::new(std::sync::Barrier::new(8));
            let openers: Vec<_> = (0..8)
                .map(|_| {
                    let (path, start) = (path.clone(), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        let mut conn = open_connection(&path)?;
                        migrate(&mut conn)
                    })
                })
                .collect();
            for o in openers {
                o.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }
}
