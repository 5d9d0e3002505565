//! Where events, purchases and decisions live: the [`Store`] trait and its two implementations.
//!
//! - [`SqliteStore`]: the embedded default (`sqlite://PATH`), WAL, every call on the blocking
//!   pool behind an async lock so the runtime never blocks and waiters never pin threads.
//! - [`PostgresStore`]: `postgres://...`, a small pool of tokio-postgres connections.
//! - [`ShardedStore`]: several `postgres://...` databases, sharded by event.
//!
//! What they guarantee is the [`Store`] contract (`contract`); [`AnyStore`] picks one by URL
//! (several URLs: sharded). Layout: `error` ([`StoreError`]), `contract`, `any_store`, `urls`
//! (splitting and redacting URLs), `sqlite` (with `group_commit` and `pending`), `postgres` (with
//! `pg_pool`), `sharded` (with `shard_catalog`, its SQL on each shard), `rows` and `schema`
//! (shared by all), `upgrade_checks` (what both dialects' upgrade tests check).

mod any_store;
mod contract;
mod error;
mod group_commit;
mod pending;
mod pg_pool;
mod postgres;
mod replica;
mod rows;
mod schema;
mod shard_catalog;
mod sharded;
mod sqlite;
#[cfg(test)]
mod upgrade_checks;
mod urls;

pub use any_store::AnyStore;
pub use contract::{RecordedPace, Store};
pub use error::StoreError;
pub use group_commit::MAX_GROUP_WRITES;
pub use pending::PendingRows;
pub use postgres::PostgresStore;
pub use replica::ReplicaMetrics;
pub use sharded::ShardedStore;
pub use sqlite::SqliteStore;
pub use urls::{is_postgres_url, redacted_url, split_db_urls};
