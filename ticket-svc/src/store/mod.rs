//! Where events, purchases and decisions live: the [`Store`] trait and its two implementations.
//!
//! - [`SqliteStore`]: the embedded default (`sqlite://PATH`), WAL, every call on the blocking
//!   pool behind an async lock so the runtime never blocks and waiters never pin threads.
//! - [`PostgresStore`]: `postgres://...`, a small pool of tokio-postgres connections.
//!
//! What both guarantee (one shared test suite checks it against both):
//! - migrations are applied at open;
//! - sold ≤ tickets and a buyer's confirmed total ≤ max_per_buyer are CHECK constraints, so even
//!   a buggy caller cannot oversell;
//! - [`Store::decide_batch`] decides a whole batch in ONE transaction with the rules of
//!   [`crate::domain::Ledger`]; a purchase id is decided once, and a redelivered job reads back
//!   its decision;

use std::future::Future;

use crate::domain::{
    Decision, Event, EventId, EventSpec, Position, Purchase, PurchaseId, PurchaseJob,
    PurchaseStatus, QueuedJob,
};

mod group_commit;
mod pending;
mod pg_pool;
mod postgres;
mod rows;
mod schema;
mod sqlite;

pub use group_commit::MAX_GROUP_WRITES;
pub use pending::PendingRows;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL has no scheme this crate knows.
    #[error("unsupported database URL {url:?}: expected sqlite://PATH or postgres://...")]
    BadUrl {
        /// The URL, as given.
        url: String,
    },
    /// SQLite said no.
    #[error("sqlite: {context}: {source}")]
    Sqlite {
        /// What the store was doing.
        context: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL said no.
    #[error("postgres: {context}: {source}")]
    Postgres {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database could not be reached in time, or the store's worker thread is gone.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// A row the store wrote does not read back as a valid value.
    #[error("corrupt row: {what}")]
    Corrupt {
        /// Which value.
        what: String,
    },
}

impl StoreError {
    /// Whether trying again later may succeed (busy database, full disk, lost connection,
    /// serialization failure): the worker waits these out and then nacks with backoff, the API
    /// answers 503. A full disk is an outage an operator ends by freeing space, not a fault of
    /// the request. (A commit that fails, on a full disk or otherwise, is `Unavailable`.)
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                )
            ),
            Self::Postgres { source, .. } => {
                source.is_closed()
                    || source.code().is_some_and(pg_code_is_transient)
                    || source.as_db_error().is_none()
            }
            Self::BadUrl { .. } | Self::Corrupt { .. } => false,
        }
    }
}

/// PostgreSQL's codes for a try that may succeed later: serialization failure and deadlock
/// (retry the transaction), connection exceptions (class 08), insufficient resources (class 53:
/// a full disk, out of memory, too many connections) and the server shutting down or starting
/// up (57P01–57P03: a restart or failover ends every session with one of these first).
fn pg_code_is_transient(code: &tokio_postgres::error::SqlState) -> bool {
    use tokio_postgres::error::SqlState;
    let c = code.code();
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || c.starts_with("08")
        || c.starts_with("53")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
}

/// The ticket store. Every method is one transaction.
pub trait Store: Send + Sync + 'static {
    /// Creates an event with nothing sold.
    fn create_event(
        &self,
        spec: &EventSpec,
    ) -> impl Future<Output = Result<Event, StoreError>> + Send;

    /// An event, or `None` if there is no such id.
    fn event(&self, id: EventId) -> impl Future<Output = Result<Option<Event>, StoreError>> + Send;

    /// Records a queued purchase as pending, unless the purchase is already recorded (a worker
    /// may have decided it first, or an Idempotency-Key retry may repeat it), and returns the
    /// position on record: the first one the purchase was queued at.
    fn record_pending(
        &self,
        job: &QueuedJob,
    ) -> impl Future<Output = Result<Position, StoreError>> + Send;

    /// A purchase, or `None` if there is no such id.
    fn purchase(
        &self,
        id: PurchaseId,
    ) -> impl Future<Output = Result<Option<Purchase>, StoreError>> + Send;

    /// Decides a batch of jobs in one transaction (see the module docs); one decision per job,
    /// in the batch's order.
    fn decide_batch(
        &self,
        jobs: &[QueuedJob],
    ) -> impl Future<Output = Result<Vec<Decision>, StoreError>> + Send;

    /// The dead-letter path: marks a purchase `rejected: failed` unless it is already decided,
    /// and returns its final status.
    fn mark_failed(
        &self,
        job: &QueuedJob,
    ) -> impl Future<Output = Result<PurchaseStatus, StoreError>> + Send;

    /// Up to `limit` purchases of an event, by position (for checks and reports).
    fn event_purchases(
        &self,
        event: EventId,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Purchase>, StoreError>> + Send;

    /// Ok when the database answers (readiness).
    fn check_ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Either store, chosen at run time by URL.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// `sqlite://PATH`.
    Sqlite(SqliteStore),
    /// `postgres://...`.
    Postgres(PostgresStore),
}

impl AnyStore {
    /// Opens the store a URL names and applies migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Self::Sqlite(SqliteStore::open(path).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(
                PostgresStore::connect(url, PostgresStore::DEFAULT_POOL_SIZE).await?,
            ))
        } else {
            Err(StoreError::BadUrl { url: url.into() })
        }
    }

    /// Decides one purchase now, in one transaction, without a queue (the naive baseline the
    /// benchmarks compare against; see [`SqliteStore::sell_now`]): its position and decision.
    pub async fn sell_now(&self, job: &PurchaseJob) -> Result<(Position, Decision), StoreError> {
        match self {
            Self::Sqlite(s) => s.sell_now(job).await,
            Self::Postgres(s) => s.sell_now(job).await,
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
    async fn check_ready(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.check_ready())
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    fn sqlite(code: std::ffi::c_int) -> StoreError {
        StoreError::Sqlite {
            context: "test",
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
    }

    #[test]
    fn postgres_codes_of_outages_are_transient_and_of_bad_requests_are_not() {
        use tokio_postgres::error::SqlState;
        for code in [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::CONNECTION_FAILURE,
            SqlState::DISK_FULL,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ] {
            assert!(super::pg_code_is_transient(&code), "{code:?}");
        }
        for code in [
            SqlState::CHECK_VIOLATION,
            SqlState::UNIQUE_VIOLATION,
            SqlState::UNDEFINED_TABLE,
            SqlState::SYNTAX_ERROR,
        ] {
            assert!(!super::pg_code_is_transient(&code), "{code:?}");
        }
    }

    #[test]
    fn busy_locked_and_full_are_transient_and_broken_rows_are_not() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_FULL,
        ] {
            assert!(sqlite(code).is_transient(), "code {code}");
        }
        for code in [
            rusqlite::ffi::SQLITE_CONSTRAINT,
            rusqlite::ffi::SQLITE_CORRUPT,
            rusqlite::ffi::SQLITE_READONLY,
        ] {
            assert!(!sqlite(code).is_transient(), "code {code}");
        }
        assert!(
            StoreError::Unavailable {
                reason: "gone".into()
            }
            .is_transient()
        );
        assert!(!StoreError::Corrupt { what: "row".into() }.is_transient());
    }
}
