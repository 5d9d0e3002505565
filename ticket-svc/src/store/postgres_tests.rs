//! Tests of `postgres`: its migrations on old databases (against `TICKET_TEST_POSTGRES_URL`;
//! skipped with a printed reason when it is unset).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_pacing_opens_with_its_rooms_fixed() {
    use crate::store::upgrade_checks::{LINE_PACE_CHECKS, PACING_CHECKS, rooms_from_before_pacing};

    // A database as the migrations before pacing left it, with a room in it.
    let Some((url, name, raw)) = schema_before(5).await else {
        return;
    };
    let opens = UnixMillis(1_798_135_200_000);
    raw.execute(
        "INSERT INTO events (name, tickets, max_per_buyer, opens_at_ms, line_admit_per_s,
                             line_seed, line_sealed_size, line_pow_bits)
         VALUES ('roomy', 10, 2, $1, 40, $2, 7, 12)",
        &[&opens.0, &vec![9_u8; 32]],
    )
    .await
    .unwrap();

    let store = PostgresStore::connect_in_schema(&url, &name, 2)
        .await
        .unwrap();
    let old = rooms_from_before_pacing(&store, opens).await;

    // The migrated tables keep a pacing and a line pace in range.
    let plain: i64 = raw
        .query_one(
            "INSERT INTO events (name, tickets, max_per_buyer) VALUES ('plain', 1, 1) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for (pacing, has_room, is_accepted) in PACING_CHECKS {
        let event = if *has_room { 1_i64 } else { plain };
        let updated = raw
            .execute(
                "UPDATE events SET line_pacing = $1 WHERE id = $2",
                &[pacing, &event],
            )
            .await;
        assert_eq!(
            updated.is_ok(),
            *is_accepted,
            "{pacing:?} {has_room}: {updated:?}"
        );
    }
    for (admitted, per_s, is_accepted) in LINE_PACE_CHECKS {
        let updated = raw
            .execute(
                "UPDATE line_paces SET admitted_milli = $1, per_s = $2 WHERE event_id = 1",
                &[admitted, &i32::try_from(*per_s).unwrap()],
            )
            .await;
        assert_eq!(
            updated.is_ok(),
            *is_accepted,
            "{admitted} {per_s}: {updated:?}"
        );
    }
    let orphan = raw
        .execute(
            "INSERT INTO line_paces (event_id, at_ms, admitted_milli, per_s, per_s_before) VALUES (999, 0, 0, 1, 0)",
            &[],
        )
        .await;
    assert!(orphan.is_err(), "a pace of no event: {orphan:?}");
    raw.batch_execute("UPDATE events SET line_pacing = 'fixed' WHERE id = 1")
        .await
        .unwrap();

    // A second open finds nothing left to do, and the old room is as it was.
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
