//! [`StoreError`]: why a store call failed, and whether trying again later may succeed (the
//! worker waits those out, the API answers them 503).

use crate::domain::EventId;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL has no scheme this crate knows.
    #[error("unsupported database URL {url:?}: expected sqlite://PATH or postgres://...")]
    BadUrl {
        /// The URL, as given (without a password).
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
    /// A call about one event named an event that does not exist.
    #[error("no event {event}")]
    NoSuchEvent {
        /// The id asked for.
        event: EventId,
    },
    /// A call about an event's waiting room ([`super::Store::seal_line`]) named an event that
    /// has none.
    #[error("event {event} has no waiting room")]
    NoWaitingRoom {
        /// The event.
        event: EventId,
    },
    /// One shard of a sharded store failed.
    #[error("shard {shard}: {source}")]
    Shard {
        /// The shard's index.
        shard: u8,
        /// What went wrong there.
        #[source]
        source: Box<StoreError>,
    },
    /// The database URLs given do not make a valid sharded store (or a single URL names one
    /// shard of a sharded store).
    #[error("sharded store: {reason}")]
    ShardConfig {
        /// What is wrong.
        reason: String,
    },
    /// A database given at one place in the URL list recorded another place at its first open:
    /// the list was reordered (or a URL removed before others).
    #[error(
        "the database given as shard {given} ({url}) is shard {recorded}: give the URLs in the \
         order they were first given (add a shard by appending its URL; never reorder or remove one)"
    )]
    ShardMismatch {
        /// Its place in the list given now.
        given: usize,
        /// The place it recorded at its first open.
        recorded: i64,
        /// Its URL, without a password.
        url: String,
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
            Self::Shard { source, .. } => source.is_transient(),
            Self::BadUrl { .. }
            | Self::Corrupt { .. }
            | Self::NoSuchEvent { .. }
            | Self::NoWaitingRoom { .. }
            | Self::ShardConfig { .. }
            | Self::ShardMismatch { .. } => false,
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

/// Wraps a SQLite error with what the store was doing.
pub fn sq(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
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
