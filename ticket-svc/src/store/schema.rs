//! The schema, as numbered migrations per dialect. A migration is never edited once released:
//! add a new one. Applied in order at open, each in its own transaction, recorded in
//! `schema_migrations`.
//!
//! The invariants the database itself enforces:
//! - `events.sold` between 0 and `tickets` (no oversell, whatever the code does);
//! - `buyer_totals.confirmed` between 0 and the event's `max_per_buyer` (copied beside it,
//!   because a CHECK cannot look at another table);
//! - a purchase's status and reason agree (`rejected` ⇔ a reason);
//! - an event's on-sale window closes after it opens, when it has both ends
//!   (`closes_at_ms > opens_at_ms`, each in milliseconds since the Unix epoch; NULL is no limit,
//!   so an event from before the window columns is always on sale);
//! - an event's waiting room is all or nothing: `line_admit_per_s` (at least 1) and `line_seed`
//!   (exactly 32 bytes) are both set or both NULL (NULL: no room, as every event from before
//!   the room columns reads), and `line_sealed_size` (at least 0) is NULL without a room.
//!   That a sealed size is never changed is the store's `UPDATE ... WHERE line_sealed_size IS
//!   NULL`, not a constraint;
//! - a room's `line_pacing` is `fixed` or `auto`, and `fixed` without a room;
//! - a line's pace (`line_paces`, one row per event at most) admits at least 0 places, at 1 to
//!   1,000,000 a second. Which point stands is the store's compare-and-set, not a constraint.
//!
//! A sharded store adds two tables of its own, outside the numbered migrations so that an
//! unsharded database keeps exactly its schema: [`POSTGRES_SHARD_IDENTITY`] on every shard and
//! [`POSTGRES_EVENT_SHARDS`] on shard 0. Like a migration, neither is ever edited: a change is a
//! new statement beside them.

/// SQLite migrations: (version, SQL).
pub const SQLITE: &[(i64, &str)] = &[
    (
        1,
        "
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    tickets INTEGER NOT NULL CHECK (tickets >= 0),
    max_per_buyer INTEGER NOT NULL CHECK (max_per_buyer >= 1),
    sold INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0 AND sold <= tickets)
);
CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events(id),
    buyer TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 1),
    position INTEGER NOT NULL CHECK (position >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
    reason TEXT CHECK (reason IN ('sold_out', 'limit_exceeded', 'failed')),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);
CREATE INDEX purchases_by_event ON purchases (event_id, position);
CREATE TABLE buyer_totals (
    event_id INTEGER NOT NULL REFERENCES events(id),
    buyer TEXT NOT NULL,
    confirmed INTEGER NOT NULL,
    max_per_buyer INTEGER NOT NULL,
    CHECK (confirmed >= 0 AND confirmed <= max_per_buyer),
    PRIMARY KEY (event_id, buyer)
) WITHOUT ROWID;
",
    ),
    // The same constraints on `purchases` without `IN (...)`: SQLite evaluates a CHECK's
    // `x IN ('a', 'b')` by building a temporary b-tree of the list on every insert and update,
    // which under a rush was about a tenth of the whole process's instructions (zeroing the
    // temporary pages). Equality tests say the same for free. SQLite cannot alter a CHECK, so the
    // table is rebuilt (copied in one transaction; nothing references it).
    (
        2,
        "
CREATE TABLE purchases_v2 (
    id TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events(id),
    buyer TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 1),
    position INTEGER NOT NULL CHECK (position >= 0),
    status TEXT NOT NULL
        CHECK (status = 'pending' OR status = 'confirmed' OR status = 'rejected'),
    reason TEXT
        CHECK (reason IS NULL OR reason = 'sold_out' OR reason = 'limit_exceeded' OR reason = 'failed'),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);
INSERT INTO purchases_v2 (id, event_id, buyer, quantity, position, status, reason)
    SELECT id, event_id, buyer, quantity, position, status, reason FROM purchases;
DROP TABLE purchases;
ALTER TABLE purchases_v2 RENAME TO purchases;
CREATE INDEX purchases_by_event ON purchases (event_id, position);
",
    ),
    // An event's on-sale window. SQLite adds a column in place (existing rows read NULL: no
    // limit), but only a column's own constraint, so the CHECK rides on `closes_at_ms`; it is
    // tested against the rows already there, all NULL. INTEGER is SQLite's 64-bit integer.
    (
        3,
        "
ALTER TABLE events ADD COLUMN opens_at_ms INTEGER;
ALTER TABLE events ADD COLUMN closes_at_ms INTEGER
    CHECK (closes_at_ms IS NULL OR opens_at_ms IS NULL OR closes_at_ms > opens_at_ms);
",
    ),
    // An event's waiting room, added in place like the window (existing rows read NULL: no
    // room). Each CHECK rides on its column and may name the columns added before it. A BLOB
    // column still takes any value, and `length` counts a text's characters, so the seed must
    // be a blob of 32 bytes.
    (
        4,
        "
ALTER TABLE events ADD COLUMN line_admit_per_s INTEGER
    CHECK (line_admit_per_s >= 1);
ALTER TABLE events ADD COLUMN line_seed BLOB
    CHECK ((line_seed IS NULL) = (line_admit_per_s IS NULL)
           AND (line_seed IS NULL OR (typeof(line_seed) = 'blob' AND length(line_seed) = 32)));
ALTER TABLE events ADD COLUMN line_sealed_size INTEGER
    CHECK (line_sealed_size IS NULL OR (line_sealed_size >= 0 AND line_admit_per_s IS NOT NULL));
",
    ),
    // A waiting room's proof-of-work difficulty (0: none; every existing room asks none).
    (
        5,
        "
ALTER TABLE events ADD COLUMN line_pow_bits INTEGER NOT NULL DEFAULT 0
    CHECK (line_pow_bits BETWEEN 0 AND 28 AND (line_pow_bits = 0 OR line_admit_per_s IS NOT NULL));
",
    ),
    // A waiting room's pacing (every existing room is fixed), and the latest point of each
    // auto-paced line's admission curve. A table of its own, not columns on `events`: the
    // workers update an event's row (`sold`) on every batch, and the pacer would contend with
    // them. The CHECK on `line_pacing` costs those updates nothing: SQLite checks an UPDATE only
    // against the constraints that name a column it changes.
    (
        6,
        "
ALTER TABLE events ADD COLUMN line_pacing TEXT NOT NULL DEFAULT 'fixed'
    CHECK (line_pacing IN ('fixed', 'auto') AND (line_pacing = 'fixed' OR line_admit_per_s IS NOT NULL));
CREATE TABLE line_paces (
    event_id INTEGER PRIMARY KEY REFERENCES events(id),
    at_ms INTEGER NOT NULL,
    admitted_milli INTEGER NOT NULL CHECK (admitted_milli >= 0),
    per_s INTEGER NOT NULL CHECK (per_s BETWEEN 1 AND 1000000),
    per_s_before INTEGER NOT NULL CHECK (per_s_before BETWEEN 0 AND 1000000)
);
",
    ),
];

/// PostgreSQL migrations: (version, SQL).
pub const POSTGRES: &[(i64, &str)] = &[
    (
        1,
        "
CREATE TABLE events (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    tickets INTEGER NOT NULL CHECK (tickets >= 0),
    max_per_buyer INTEGER NOT NULL CHECK (max_per_buyer >= 1),
    sold INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0 AND sold <= tickets)
);
CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    event_id BIGINT NOT NULL REFERENCES events(id),
    buyer TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 1),
    position BIGINT NOT NULL CHECK (position >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
    reason TEXT CHECK (reason IN ('sold_out', 'limit_exceeded', 'failed')),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);
CREATE INDEX purchases_by_event ON purchases (event_id, position);
CREATE TABLE buyer_totals (
    event_id BIGINT NOT NULL REFERENCES events(id),
    buyer TEXT NOT NULL,
    confirmed INTEGER NOT NULL,
    max_per_buyer INTEGER NOT NULL,
    CHECK (confirmed >= 0 AND confirmed <= max_per_buyer),
    PRIMARY KEY (event_id, buyer)
);
",
    ),
    // An event's on-sale window. Nullable columns without a default are added without
    // rewriting the table (existing rows read NULL: no limit); the CHECK scans it once.
    (
        2,
        "
ALTER TABLE events
    ADD COLUMN opens_at_ms BIGINT,
    ADD COLUMN closes_at_ms BIGINT,
    ADD CONSTRAINT events_sale_window
        CHECK (closes_at_ms IS NULL OR opens_at_ms IS NULL OR closes_at_ms > opens_at_ms);
",
    ),
    // An event's waiting room, added like the window (no rewrite; existing rows read NULL: no
    // room).
    (
        3,
        "
ALTER TABLE events
    ADD COLUMN line_admit_per_s INTEGER,
    ADD COLUMN line_seed BYTEA,
    ADD COLUMN line_sealed_size BIGINT,
    ADD CONSTRAINT events_line_admit_per_s CHECK (line_admit_per_s >= 1),
    ADD CONSTRAINT events_line_seed CHECK (octet_length(line_seed) = 32),
    ADD CONSTRAINT events_line_sealed_size CHECK (line_sealed_size >= 0),
    ADD CONSTRAINT events_waiting_room
        CHECK ((line_admit_per_s IS NULL) = (line_seed IS NULL)
               AND (line_sealed_size IS NULL OR line_admit_per_s IS NOT NULL));
",
    ),
    // A waiting room's proof-of-work difficulty (0: none; every existing room asks none).
    (
        4,
        "
ALTER TABLE events
    ADD COLUMN line_pow_bits INTEGER NOT NULL DEFAULT 0,
    ADD CONSTRAINT events_line_pow_bits
        CHECK (line_pow_bits BETWEEN 0 AND 28 AND (line_pow_bits = 0 OR line_admit_per_s IS NOT NULL));
",
    ),
    // A waiting room's pacing (every existing room is fixed; a constant default adds the
    // column without rewriting the table), and the latest point of each auto-paced line's
    // admission curve, in a table of its own so that the pacer never contends with the workers'
    // updates of `events.sold` (its foreign key takes `FOR KEY SHARE`, which `FOR NO KEY
    // UPDATE` does not block).
    (
        5,
        "
ALTER TABLE events
    ADD COLUMN line_pacing TEXT NOT NULL DEFAULT 'fixed',
    ADD CONSTRAINT events_line_pacing
        CHECK (line_pacing IN ('fixed', 'auto') AND (line_pacing = 'fixed' OR line_admit_per_s IS NOT NULL));
CREATE TABLE line_paces (
    event_id BIGINT PRIMARY KEY REFERENCES events(id),
    at_ms BIGINT NOT NULL,
    admitted_milli BIGINT NOT NULL CHECK (admitted_milli >= 0),
    per_s INTEGER NOT NULL CHECK (per_s BETWEEN 1 AND 1000000),
    per_s_before INTEGER NOT NULL CHECK (per_s_before BETWEEN 0 AND 1000000)
);
",
    ),
];

/// Every shard database: the shard it is, recorded at its first open as a shard (one row).
pub const POSTGRES_SHARD_IDENTITY: &str = "
CREATE TABLE IF NOT EXISTS shard_identity (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    shard SMALLINT NOT NULL CHECK (shard >= 0 AND shard <= 255)
);
";

/// Shard 0: the catalog, each event's shard, written before the event row (an event id without a
/// row here was created before sharding and lives on shard 0).
pub const POSTGRES_EVENT_SHARDS: &str = "
CREATE TABLE IF NOT EXISTS event_shards (
    event_id BIGINT PRIMARY KEY,
    shard SMALLINT NOT NULL CHECK (shard >= 0 AND shard <= 255)
);
";
