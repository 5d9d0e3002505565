//! Tests of `sqlite`: its migrations on old databases, corrupt rows, and opening one file
//! from several processes at once.
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
        // A batch's one write to its event: SQLite evaluates only the CHECKs that name a column
        // an UPDATE changes, so the event's other CHECKs (the room's, the pacing's `IN`) cost
        // it nothing.
        "UPDATE events SET sold = 2 WHERE id = 1 AND sold <> 2",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_pacing_opens_with_its_rooms_fixed() {
    use crate::domain::UnixMillis;
    use crate::store::upgrade_checks::{LINE_PACE_CHECKS, PACING_CHECKS, rooms_from_before_pacing};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let opens = UnixMillis(1_798_135_200_000);
    // A database as the migrations before pacing left it, with a room in it.
    {
        let conn = database_before(&path, 6);
        conn.execute(
            "INSERT INTO events (name, tickets, max_per_buyer, opens_at_ms, line_admit_per_s,
                                 line_seed, line_sealed_size, line_pow_bits)
             VALUES ('roomy', 10, 2, ?1, 40, ?2, 7, 12)",
            params![opens.0, vec![9_u8; 32]],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let old = rooms_from_before_pacing(&store, opens).await;

    // The migrated tables keep a pacing and a line pace in range.
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    raw.execute(
        "INSERT INTO events (name, tickets, max_per_buyer) VALUES ('plain', 1, 1)",
        [],
    )
    .unwrap();
    let plain = raw.last_insert_rowid();
    for (pacing, has_room, is_accepted) in PACING_CHECKS {
        let event = if *has_room { 1 } else { plain };
        let updated = raw.execute(
            "UPDATE events SET line_pacing = ?1 WHERE id = ?2",
            params![pacing, event],
        );
        assert_eq!(
            updated.is_ok(),
            *is_accepted,
            "{pacing:?} {has_room}: {updated:?}"
        );
    }
    for (admitted, per_s, is_accepted) in LINE_PACE_CHECKS {
        let updated = raw.execute(
            "UPDATE line_paces SET admitted_milli = ?1, per_s = ?2 WHERE event_id = 1",
            params![admitted, per_s],
        );
        assert_eq!(
            updated.is_ok(),
            *is_accepted,
            "{admitted} {per_s}: {updated:?}"
        );
    }
    let orphan = raw.execute(
        "INSERT INTO line_paces (event_id, at_ms, admitted_milli, per_s, per_s_before) VALUES (999, 0, 0, 1, 0)",
        [],
    );
    assert!(orphan.is_err(), "a pace of no event: {orphan:?}");
    raw.execute("UPDATE events SET line_pacing = 'fixed' WHERE id = 1", [])
        .unwrap();
    drop(store);

    // A second open finds nothing left to do, and the old room is as it was.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.event(EventId(1)).await.unwrap().unwrap(), old);
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
