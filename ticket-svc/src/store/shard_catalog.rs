//! What a sharded store asks of each shard's database, as [`PostgresStore`] methods: its
//! recorded place in the URL list (`shard_identity`), and on shard 0 the catalog of events'
//! shards (`event_shards`) and the event id sequence. The tables are in `schema`.
//!
//! Invariants kept here:
//! - a database records its shard index once, at its first open as a shard, and is refused
//!   under any other index afterwards ([`StoreError::ShardMismatch`]);
//! - a database becomes a shard other than 0 only while it holds no events (data of its own
//!   would collide with the ids of shard 0's sequence);
//! - a catalog row is never changed or deleted: if the event's own insert fails after it, the id
//!   is left unused (the insert may have committed with its answer lost, so deleting could
//!   orphan a real event);
//! - a database that is a shard of a sharded store is refused as an unsharded store, unless it
//!   is shard 0 and every catalogued event is on shard 0.

use tokio_postgres::GenericClient;

use super::error::StoreError;
use super::pg_pool::pg;
use super::postgres::{
    MIGRATION_LOCK, PostgresStore, event_columns, event_of, pg_waiting_room_columns,
};
use super::rows::{i32_of, window_columns};
use super::schema;
use crate::domain::{Event, EventId, EventSpec};

/// An event's shard on record, and whether shard 0 holds its row (one round trip).
const SQL_PLACEMENT: &str = "SELECT (SELECT shard FROM event_shards WHERE event_id = $1),
                                    EXISTS (SELECT 1 FROM events WHERE id = $1)";
/// The next event id, from shard 0's `events` identity sequence.
const SQL_NEXT_EVENT_ID: &str = "SELECT nextval(pg_get_serial_sequence('events', 'id'))";
const SQL_PLACE_EVENT: &str = "INSERT INTO event_shards (event_id, shard) VALUES ($1, $2)";
const SQL_INSERT_EVENT_WITH_ID: &str = concat!(
    "INSERT INTO events (id, name, tickets, max_per_buyer, opens_at_ms, closes_at_ms,
                         line_admit_per_s, line_seed, line_sealed_size, line_pow_bits,
                         line_pacing)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
    event_columns!()
);

/// The shard index this database recorded, if any (its `shard_identity` table must exist).
async fn recorded_shard(client: &impl GenericClient) -> Result<Option<i16>, StoreError> {
    client
        .query_opt("SELECT shard FROM shard_identity", &[])
        .await
        .map_err(pg("read shard_identity"))?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(pg("read shard_identity.shard"))
}

impl PostgresStore {
    /// Records this database as shard `given` at its first open as a shard, or checks that it
    /// recorded `given` before. `url` (without its password) names it in errors.
    pub(super) async fn claim_shard(&self, given: usize, url: &str) -> Result<(), StoreError> {
        let index = i16::try_from(given)
            .ok()
            .filter(|i| *i <= i16::from(u8::MAX))
            .ok_or_else(|| StoreError::ShardConfig {
                reason: format!("shard index {given} is over 255"),
            })?;
        let mut c = self.pooled().await?;
        let tx = c
            .client()?
            .transaction()
            .await
            .map_err(pg("begin shard identity"))?;
        // Several processes may open the same shard at once: the first one records it.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("lock shard identity"))?;
        tx.batch_execute(schema::POSTGRES_SHARD_IDENTITY)
            .await
            .map_err(pg("create shard_identity"))?;
        let recorded = recorded_shard(&tx).await?;
        match recorded {
            Some(r) if r == index => {}
            Some(r) => {
                return Err(StoreError::ShardMismatch {
                    given,
                    recorded: i64::from(r),
                    url: url.to_owned(),
                });
            }
            None => {
                if index > 0 {
                    let has_events: bool = tx
                        .query_one("SELECT EXISTS (SELECT 1 FROM events)", &[])
                        .await
                        .map_err(pg("read events"))?
                        .try_get(0)
                        .map_err(pg("read events"))?;
                    if has_events {
                        return Err(StoreError::ShardConfig {
                            reason: format!(
                                "the database given as shard {given} ({url}) holds events of its \
                                 own and has never been a shard: a new shard must be an empty \
                                 database"
                            ),
                        });
                    }
                }
                tx.execute("INSERT INTO shard_identity (shard) VALUES ($1)", &[&index])
                    .await
                    .map_err(pg("record shard identity"))?;
            }
        }
        tx.commit().await.map_err(pg("commit shard identity"))
    }

    /// Shard 0: creates the catalog if it is missing and returns the highest shard it places an
    /// event on (`None` while it is empty).
    pub(super) async fn open_catalog(&self) -> Result<Option<i16>, StoreError> {
        let mut c = self.pooled().await?;
        let client = c.client()?;
        client
            .batch_execute(schema::POSTGRES_EVENT_SHARDS)
            .await
            .map_err(pg("create event_shards"))?;
        client
            .query_one("SELECT MAX(shard) FROM event_shards", &[])
            .await
            .map_err(pg("read event_shards"))?
            .try_get(0)
            .map_err(pg("read event_shards"))
    }

    /// Shard 0: an event's shard on record, and whether this database holds the event's row.
    pub(super) async fn placement(&self, id: EventId) -> Result<(Option<i16>, bool), StoreError> {
        let mut c = self.pooled().await?;
        let st = c.stmt(SQL_PLACEMENT).await?;
        let row = c
            .client()?
            .query_one(&st, &[&id.0])
            .await
            .map_err(pg("read event placement"))?;
        Ok((
            row.try_get(0).map_err(pg("read event_shards.shard"))?,
            row.try_get(1).map_err(pg("read events.id"))?,
        ))
    }

    /// Shard 0: the next event id, unique across every shard.
    pub(super) async fn next_event_id(&self) -> Result<EventId, StoreError> {
        let mut c = self.pooled().await?;
        c.client()?
            .query_one(SQL_NEXT_EVENT_ID, &[])
            .await
            .map_err(pg("next event id"))?
            .try_get(0)
            .map(EventId)
            .map_err(pg("read next event id"))
    }

    /// Shard 0: records that event `id` lives on `shard` (before its row is written there).
    pub(super) async fn place_event(&self, id: EventId, shard: u8) -> Result<(), StoreError> {
        let mut c = self.pooled().await?;
        c.client()?
            .execute(SQL_PLACE_EVENT, &[&id.0, &i16::from(shard)])
            .await
            .map_err(pg("record event placement"))?;
        Ok(())
    }

    /// Creates an event under an id chosen by the caller (from shard 0's sequence).
    pub(super) async fn create_event_with_id(
        &self,
        id: EventId,
        spec: &EventSpec,
    ) -> Result<Event, StoreError> {
        let mut c = self.pooled().await?;
        let (opens_at_ms, closes_at_ms) = window_columns(&spec.window);
        let (admit_per_s, room) = pg_waiting_room_columns(spec.waiting_room.as_ref());
        let row = c
            .client()?
            .query_one(
                SQL_INSERT_EVENT_WITH_ID,
                &[
                    &id.0,
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

    /// Refuses to open, as an unsharded store, a database that is a shard of a sharded one:
    /// a shard other than 0 (its events' ids belong to shard 0's sequence), or a shard 0 whose
    /// catalog places events elsewhere (they would all be "not found"). A database that never
    /// was a shard answers at once.
    pub(super) async fn refuse_if_sharded(&self) -> Result<(), StoreError> {
        let mut c = self.pooled().await?;
        let client = c.client()?;
        let row = client
            .query_one(
                "SELECT to_regclass('shard_identity') IS NOT NULL,
                        to_regclass('event_shards') IS NOT NULL",
                &[],
            )
            .await
            .map_err(pg("look for shard tables"))?;
        let has_identity: bool = row.try_get(0).map_err(pg("look for shard tables"))?;
        let has_catalog: bool = row.try_get(1).map_err(pg("look for shard tables"))?;
        if has_identity {
            let shard = recorded_shard(client).await?;
            if let Some(s) = shard.filter(|s| *s != 0) {
                return Err(StoreError::ShardConfig {
                    reason: format!(
                        "this database is shard {s} of a sharded store: give every shard's URL, \
                         in order (shard 0 first)"
                    ),
                });
            }
        }
        if has_catalog {
            let elsewhere: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM event_shards WHERE shard > 0)",
                    &[],
                )
                .await
                .map_err(pg("read event_shards"))?
                .try_get(0)
                .map_err(pg("read event_shards"))?;
            if elsewhere {
                return Err(StoreError::ShardConfig {
                    reason: "this database is shard 0 of a sharded store with events on other \
                             shards: give every shard's URL, in order"
                        .into(),
                });
            }
        }
        Ok(())
    }
}
