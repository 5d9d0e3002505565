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

use super::contract::{RecordedPace, Store};
use super::error::{StoreError, sq};
use super::group_commit::{Durability, Undo, WriteOp, spawn_writer, write};
use super::pending::{OnRecord, PendingBuffer, PendingRows};
use super::rows::{
    PaceRow, PurchaseRow, i64_of, line_pace_columns, pace_on_record, recorded_pace,
    sealed_on_record, to_purchase, u32_of, waiting_room_columns, waiting_room_of, window_columns,
    window_of,
};
use super::schema;
use crate::domain::{
    Decision, Event, EventId, EventSpec, LinePace, Position, Purchase, PurchaseId, PurchaseJob,
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
                             line_admit_per_s, line_seed, line_sealed_size, line_pow_bits, \
                             line_pacing";
const PURCHASE_COLUMNS: &str = "id, event_id, buyer, quantity, position, status, reason";

/// An event's columns: id, name, tickets, max_per_buyer, sold, opens_at_ms, closes_at_ms,
/// line_admit_per_s, line_seed, line_sealed_size, line_pow_bits, line_pacing.
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
    String,
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
        r.get(11)?,
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
        line_pacing,
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
            &line_pacing,
        )?,
    })
}

/// Seals an event's line: sets its pre-queue size unless one is on record (or it has no room).
const SQL_SEAL_LINE: &str = "UPDATE events SET line_sealed_size = ?2
     WHERE id = ?1 AND line_sealed_size IS NULL AND line_admit_per_s IS NOT NULL";
/// What sealing left: whether the event has a room, and its size on record.
const SQL_SEALED_SIZE: &str =
    "SELECT line_admit_per_s IS NOT NULL, line_sealed_size FROM events WHERE id = ?1";
/// An event's line pace: whether it has a room, and its pace on record (a [`PaceRow`]).
const SQL_LINE_PACE: &str =
    "SELECT e.line_admit_per_s IS NOT NULL, p.at_ms, p.admitted_milli, p.per_s,
            p.per_s_before
     FROM events e LEFT JOIN line_paces p ON p.event_id = e.id WHERE e.id = ?1";
/// Records a line's first pace, unless one is on record.
const SQL_INSERT_LINE_PACE: &str =
    "INSERT INTO line_paces (event_id, at_ms, admitted_milli, per_s, per_s_before)
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (event_id) DO NOTHING";
/// Records a line's next pace, if the one on record is still the caller's (?6 to ?8: a
/// point is known by where it turns and to what).
const SQL_UPDATE_LINE_PACE: &str = "UPDATE line_paces
     SET at_ms = ?2, admitted_milli = ?3, per_s = ?4, per_s_before = ?5
     WHERE event_id = ?1 AND at_ms = ?6 AND admitted_milli = ?7 AND per_s = ?8";

/// An event's line pace, as [`SQL_LINE_PACE`] reads it on `c` (`None`: no such event).
fn line_pace_row(c: &Connection, event: EventId) -> Result<Option<PaceRow>, StoreError> {
    c.prepare_cached(SQL_LINE_PACE)
        .map_err(sq("prepare line pace read"))?
        .query_row([event.0], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()
        .map_err(sq("read line pace"))
}

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
                                     line_admit_per_s, line_seed, line_sealed_size, line_pow_bits,
                                     line_pacing)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    spec.name,
                    spec.tickets,
                    spec.max_per_buyer,
                    opens_at_ms,
                    closes_at_ms,
                    room.admit_per_s,
                    room.seed,
                    room.sealed_size,
                    room.pow_bits,
                    room.pacing
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

    async fn line_pace(&self, event: EventId) -> Result<Option<LinePace>, StoreError> {
        run(self.reader(), move |c| {
            pace_on_record(event, line_pace_row(c, event)?)
        })
        .await
    }

    async fn record_line_pace(
        &self,
        event: EventId,
        current: Option<LinePace>,
        next: LinePace,
    ) -> Result<RecordedPace, StoreError> {
        // On the writer thread, in one transaction (`BEGIN IMMEDIATE` holds the file's write
        // lock from the start, so other processes wait), synced like a seal.
        self.write(move |c| {
            // No such event, or no room: answered before anything is written.
            pace_on_record(event, line_pace_row(c, event)?)?;
            let (at_ms, admitted, per_s, per_s_before) = line_pace_columns(&next);
            let written = match current.as_ref().map(line_pace_columns) {
                None => c
                    .prepare_cached(SQL_INSERT_LINE_PACE)
                    .map_err(sq("prepare line pace insert"))?
                    .execute(params![event.0, at_ms, admitted, per_s, per_s_before]),
                Some((was_at_ms, was_admitted, was_per_s, _)) => c
                    .prepare_cached(SQL_UPDATE_LINE_PACE)
                    .map_err(sq("prepare line pace update"))?
                    .execute(params![
                        event.0,
                        at_ms,
                        admitted,
                        per_s,
                        per_s_before,
                        was_at_ms,
                        was_admitted,
                        was_per_s
                    ]),
            }
            .map_err(sq("record line pace"))?;
            Ok(RecordedPace {
                pace: recorded_pace(event, current, line_pace_row(c, event)?)?,
                won: written == 1,
            })
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
#[path = "sqlite_tests.rs"]
mod tests;
