//! Where events, purchases and decisions live: the [`Store`] trait and its two implementations.
//!
//! - [`SqliteStore`]: the embedded default (`sqlite://PATH`), WAL, every call on the blocking
//!   pool behind an async lock so the runtime never blocks and waiters never pin threads.
//! - [`PostgresStore`]: `postgres://...`, a small pool of tokio-postgres connections.
//!
//! What both guarantee is the [`Store`] contract (`contract`); [`AnyStore`] picks one by URL.
//! Layout: `error` ([`StoreError`]), `contract`, `any_store`, `sqlite` (with `group_commit` and
//! `pending`), `postgres` (with `pg_pool`), `rows` and `schema` (shared by both).

mod any_store;
mod contract;
mod error;
mod group_commit;
mod pending;
mod pg_pool;
mod postgres;
mod rows;
mod schema;
mod sqlite;

pub use any_store::AnyStore;
pub use contract::Store;
pub use error::StoreError;
pub use group_commit::MAX_GROUP_WRITES;
pub use pending::PendingRows;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
