//! The store sharded by event over several PostgreSQL databases (`ShardedStore`): placement and
//! its stability, purchase ids that find their shard, the URL order check, batches across
//! shards, and the API over it. Each test gets databases of its own (`CREATE DATABASE
//! ticket_shard_<uuid>` on the server of `TICKET_TEST_POSTGRES_URL`), dropped when it ends, even
//! by a panic; without that variable the tests print why they are skipped and pass. The store
//! suite (`store.rs`) also runs over two shards.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use ticket_svc::domain::{
    EventId, EventSpec, IdempotencyKey, Ledger, PurchaseId, PurchaseStatus, QueuedJob,
    RejectReason, decide_in_order,
};
use ticket_svc::http::ApiConfig;
use ticket_svc::queue::{MemoryQueue, MemoryQueueConfig};
use ticket_svc::store::{AnyStore, ShardedStore, Store, StoreError};
use ticket_svc::testing::{create_event, get, pg_client, queued, start_api_over, with_database};
use ticket_svc::worker::{WorkerConfig, run_workers};
use tokio_util::sync::CancellationToken;

/// Databases made for one test on the server of `TICKET_TEST_POSTGRES_URL`, dropped (with
/// `FORCE`, which ends the store's connections) when this is dropped.
pub struct TestDatabases {
    /// The URL given: where databases are created and dropped from.
    server: String,
    /// The databases' names, shard order.
    names: Vec<String>,
}

impl TestDatabases {
    /// `count` fresh databases, or `None` (with the reason printed) without a server.
    pub async fn new(count: usize) -> Option<Self> {
        let Ok(server) = std::env::var("TICKET_TEST_POSTGRES_URL") else {
            eprintln!("skipped: TICKET_TEST_POSTGRES_URL is not set (sharded store tests)");
            return None;
        };
        let mut dbs = Self {
            server,
            names: Vec::new(),
        };
        for _ in 0..count {
            dbs.add().await;
        }
        Some(dbs)
    }

    /// Creates one more database (the next shard, when its URL is appended) and returns its URL.
    pub async fn add(&mut self) -> String {
        let name = format!("ticket_shard_{}", uuid::Uuid::new_v4().simple());
        pg_client(&self.server)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("the test server lets the test create databases");
        self.names.push(name);
        self.url(self.names.len() - 1)
    }

    /// Database `i`'s URL.
    pub fn url(&self, i: usize) -> String {
        with_database(&self.server, &self.names[i])
    }

    /// Every database's URL, in the order made.
    pub fn urls(&self) -> Vec<String> {
        (0..self.names.len()).map(|i| self.url(i)).collect()
    }

    /// A sharded store over every database, in the order made.
    pub async fn open(&self) -> ShardedStore {
        ShardedStore::open(&self.urls(), 4).await.unwrap()
    }

    /// A plain client on database `i`, to look at what is stored where.
    pub async fn client(&self, i: usize) -> tokio_postgres::Client {
        pg_client(&self.url(i)).await
    }

    /// Makes database `i` refuse connections and ends its sessions (a shard outage), or lets it
    /// take connections again.
    pub async fn set_reachable(&self, i: usize, is_reachable: bool) {
        let name = &self.names[i];
        let c = pg_client(&self.server).await;
        c.batch_execute(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {is_reachable}"
        ))
        .await
        .unwrap();
        if !is_reachable {
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[name],
            )
            .await
            .unwrap();
        }
    }
}

impl Drop for TestDatabases {
    fn drop(&mut self) {
        let (server, names) = (self.server.clone(), std::mem::take(&mut self.names));
        // Drop runs inside the test's runtime (and maybe during a panic): the databases are
        // dropped from a thread of its own with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the test databases");
            rt.block_on(async {
                let c = pg_client(&server).await;
                for name in names {
                    if let Err(e) = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                    {
                        eprintln!("could not drop the test database {name}: {e}");
                    }
                }
            });
        })
        .join();
        if dropped.is_err() {
            eprintln!("dropping the test databases panicked");
        }
    }
}

fn spec(tickets: i64, max: i64) -> EventSpec {
    EventSpec::new("DJ night", tickets, max).unwrap()
}

/// A job for `event` as the API names it: its id stamped with the event's shard.
async fn job_in(s: &impl Store, event: EventId, buyer: &str, quantity: u32, pos: u64) -> QueuedJob {
    let mut j = queued(event, buyer, quantity, pos);
    j.job.purchase_id = j.job.purchase_id.on_shard(s.shard_of(event).await.unwrap());
    j
}

/// The event ids whose rows database `i` holds, and (for shard 0) the catalog.
async fn event_rows(dbs: &TestDatabases, i: usize) -> Vec<i64> {
    let c = dbs.client(i).await;
    c.query("SELECT id FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn catalog(dbs: &TestDatabases) -> HashMap<i64, i16> {
    let c = dbs.client(0).await;
    c.query("SELECT event_id, shard FROM event_shards", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_spread_over_the_shards_each_in_one_database_and_recorded_in_the_catalog() {
    let Some(dbs) = TestDatabases::new(2).await else {
        return;
    };
    let s = dbs.open().await;
    assert_eq!(s.shard_count(), 2);
    let mut on = [Vec::new(), Vec::new()];
    for _ in 0..6 {
        let e = s.create_event(&spec(10, 2)).await.unwrap();
        let shard = s.shard_of(e.id).await.unwrap();
        // The rule: id % shards at creation.
        assert_eq!(i64::from(shard), e.id.0 % 2, "event {}", e.id);
        assert_eq!(s.event(e.id).await.unwrap().unwrap(), e);
        on[usize::from(shard)].push(e.id.0);
    }
    assert_eq!(on[0].len(), 3);
    assert_eq!(on[1].len(), 3);
    // Each event's row is in its shard's database only; ids are unique across shards.
    assert_eq!(event_rows(&dbs, 0).await, on[0]);
    assert_eq!(event_rows(&dbs, 1).await, on[1]);
    let cat = catalog(&dbs).await;
    assert_eq!(cat.len(), 6);
    for (shard, ids) in on.iter().enumerate() {
        for id in ids {
            assert_eq!(cat[id], i16::try_from(shard).unwrap());
        }
    }
    // Each database knows which shard it is.
    for i in 0..2 {
        let c = dbs.client(i).await;
        let recorded: i16 = c
            .query_one("SELECT shard FROM shard_identity", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(usize::try_from(recorded).unwrap(), i);
    }
    // Readiness asks every shard.
    s.check_ready().await.unwrap();
    assert_eq!(s.shard_of(EventId(987_654)).await.unwrap(), 0);
    assert!(s.event(EventId(987_654)).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_id_finds_its_shard_and_plain_ids_are_on_shard_0() {
    let Some(dbs) = TestDatabases::new(2).await else {
        return;
    };
    let s = dbs.open().await;
    let one = s.create_event(&spec(10, 4)).await.unwrap();
    let zero = s.create_event(&spec(10, 4)).await.unwrap();
    assert_eq!(s.shard_of(one.id).await.unwrap(), 1);
    assert_eq!(s.shard_of(zero.id).await.unwrap(), 0);

    let key = IdempotencyKey::new("k-1").unwrap();
    let mut jobs = Vec::new();
    for (event, pos) in [(one.id, 0u64), (zero.id, 0)] {
        let shard = s.shard_of(event).await.unwrap();
        let minted = job_in(&s, event, "ann", 1, pos).await;
        let mut keyed = queued(event, "bob", 1, pos + 1);
        keyed.job.purchase_id = PurchaseId::for_idempotency_key(event, "bob", &key).on_shard(shard);
        for j in [minted, keyed] {
            assert_eq!(j.job.purchase_id.shard(), shard);
            s.record_pending(&j).await.unwrap();
            jobs.push(j);
        }
    }
    // Shard 0 keeps plain ids: a v7 and a v5.
    let versions: Vec<usize> = jobs
        .iter()
        .map(|j| j.job.purchase_id.0.get_version_num())
        .collect();
    assert_eq!(versions, [8, 8, 7, 5]);
    assert!(jobs[0].job.purchase_id.is_minted() && !jobs[1].job.purchase_id.is_minted());
    s.decide_batch(&jobs).await.unwrap();
    for j in &jobs {
        let p = s.purchase(j.job.purchase_id).await.unwrap().unwrap();
        assert_eq!(
            (p.event_id, p.status),
            (j.job.event_id, PurchaseStatus::Confirmed)
        );
    }
    // The rows are where the ids say: shard 1's purchases in database 1 only.
    for (i, expected) in [(0usize, 2i64), (1, 2)] {
        let n: i64 = dbs
            .client(i)
            .await
            .query_one("SELECT COUNT(*) FROM purchases", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, expected, "database {i}");
    }
    let on_one = jobs[0].job.purchase_id;
    assert!(
        dbs.client(1)
            .await
            .query_opt(
                "SELECT 1 FROM purchases WHERE id = $1",
                &[&on_one.to_string()]
            )
            .await
            .unwrap()
            .is_some()
    );
    // An id stamped for a shard this store does not have, or for the wrong one, names nothing.
    assert!(s.purchase(on_one.on_shard(7)).await.unwrap().is_none());
    assert!(
        s.purchase(PurchaseId::new().on_shard(1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.purchase(PurchaseId::new()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decide_batch_across_shards_answers_in_order_and_a_failed_shard_fails_the_batch() {
    let Some(dbs) = TestDatabases::new(2).await else {
        return;
    };
    let s = dbs.open().await;
    let mut registry = prometheus_client::registry::Registry::default();
    s.register_metrics(&mut registry);
    let a = s.create_event(&spec(5, 4)).await.unwrap(); // shard 1
    let b = s.create_event(&spec(3, 2)).await.unwrap(); // shard 0
    assert_ne!(
        s.shard_of(a.id).await.unwrap(),
        s.shard_of(b.id).await.unwrap()
    );

    // Interleaved: each event's jobs in position order, the two events mixed.
    let mut jobs = Vec::new();
    for i in 0..12u64 {
        let (event, buyer) = if i % 3 == 0 {
            (b.id, format!("b{}", i % 2))
        } else {
            (a.id, format!("a{}", i % 4))
        };
        jobs.push(job_in(&s, event, &buyer, 1 + (i % 3) as u32, i).await);
    }
    let mut reference = Ledger::new();
    reference.add_event(a.id, 5, 4, 0);
    reference.add_event(b.id, 3, 2, 0);
    let expected = decide_in_order(&mut reference, &jobs);

    let got = s.decide_batch(&jobs).await.unwrap();
    assert_eq!(got, expected, "decisions in the batch's order");
    assert!(got.iter().any(|d| d.status == PurchaseStatus::Confirmed));
    assert!(
        got.iter()
            .any(|d| d.status == PurchaseStatus::Rejected(RejectReason::SoldOut))
    );
    assert_eq!(
        s.event(a.id).await.unwrap().unwrap().sold,
        reference.sold(a.id).unwrap()
    );
    assert_eq!(
        s.event(b.id).await.unwrap().unwrap().sold,
        reference.sold(b.id).unwrap()
    );
    // Redelivered: read back, in order, nothing sold again.
    let again = s.decide_batch(&jobs).await.unwrap();
    assert!(again.iter().all(|d| !d.is_new));
    let statuses =
        |ds: &[ticket_svc::domain::Decision]| ds.iter().map(|d| d.status).collect::<Vec<_>>();
    assert_eq!(statuses(&again), statuses(&got));

    // Shard 1 goes away: a batch touching both fails, naming shard 1; shard 0's part committed
    // and is read back when the batch comes again.
    let c = s.create_event(&spec(10, 4)).await.unwrap(); // shard 1
    let d = s.create_event(&spec(10, 4)).await.unwrap(); // shard 0
    let mixed = vec![
        job_in(&s, c.id, "x", 1, 100).await,
        job_in(&s, d.id, "y", 1, 100).await,
    ];
    dbs.set_reachable(1, false).await;
    let err = s.decide_batch(&mixed).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Shard { shard: 1, .. }),
        "the error names the shard: {err}"
    );
    assert!(s.check_ready().await.is_err());
    let on_zero = s.purchase(mixed[1].job.purchase_id).await.unwrap().unwrap();
    assert_eq!(on_zero.status, PurchaseStatus::Confirmed);
    dbs.set_reachable(1, true).await;
    // The pool may first hand out connections that died with the outage: each fails once.
    let (mut failed_again, mut retried) = (0u32, None);
    while retried.is_none() {
        match s.decide_batch(&mixed).await {
            Ok(ds) => retried = Some(ds),
            Err(e) if failed_again < 20 => {
                assert!(matches!(e, StoreError::Shard { shard: 1, .. }), "{e}");
                failed_again += 1;
            }
            Err(e) => panic!("shard 1 is back, yet: {e}"),
        }
    }
    let retried = retried.expect("the batch is decided once shard 1 is back");
    assert!(retried[0].is_new && !retried[1].is_new);
    assert_eq!(s.event(c.id).await.unwrap().unwrap().sold, 1);
    assert_eq!(s.event(d.id).await.unwrap().unwrap().sold, 1);

    let text = plumbing::metrics::encode(&registry).unwrap();
    let count = |metric: &str, shard: u8| -> f64 {
        let prefix = format!("{metric}{{shard=\"{shard}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in\n{text}"))
    };
    let on = |event| jobs.iter().filter(|j| j.job.event_id == event).count() as f64;
    // Twice each shard's part of the first batch; then shard 0's part of the mixed batch at
    // every try (decided at the first, read back at the others) and shard 1's once.
    let tries = 2.0 + f64::from(failed_again);
    assert_eq!(
        count("ticket_store_shard_decisions_total", 0),
        2.0 * on(b.id) + tries
    );
    assert_eq!(
        count("ticket_store_shard_decisions_total", 1),
        2.0 * on(a.id) + 1.0
    );
    assert_eq!(count("ticket_store_shard_errors_total", 0), 0.0);
    assert_eq!(count("ticket_store_shard_errors_total", 1), tries - 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_shard_moves_no_event_and_finds_every_old_purchase() {
    let Some(mut dbs) = TestDatabases::new(2).await else {
        return;
    };
    // Before sharding: one database, plain ids, no catalog.
    let single = AnyStore::open(&dbs.url(0)).await.unwrap();
    let old = single.create_event(&spec(10, 4)).await.unwrap();
    let old_job = queued(old.id, "ann", 2, 0);
    single
        .decide_batch(std::slice::from_ref(&old_job))
        .await
        .unwrap();
    drop(single);

    // Two shards: the old event stays on shard 0 (no catalog row), new ones alternate.
    let two = dbs.open().await;
    assert_eq!(two.shard_of(old.id).await.unwrap(), 0);
    assert!(!catalog(&dbs).await.contains_key(&old.id.0));
    let mut events = vec![old.clone()];
    let mut jobs = vec![old_job];
    for i in 0..4u64 {
        let e = two.create_event(&spec(10, 4)).await.unwrap();
        assert!(e.id > old.id, "ids continue shard 0's sequence");
        let j = job_in(&two, e.id, "bob", 1, i).await;
        two.decide_batch(std::slice::from_ref(&j)).await.unwrap();
        events.push(e);
        jobs.push(j);
    }
    let mut placed = HashMap::new();
    for e in &events {
        placed.insert(e.id, two.shard_of(e.id).await.unwrap());
    }
    assert!(placed.values().any(|s| *s == 1));
    let catalog_before = catalog(&dbs).await;
    let rows_before = [event_rows(&dbs, 0).await, event_rows(&dbs, 1).await];
    drop(two);

    // A third shard, appended.
    dbs.add().await;
    let three = dbs.open().await;
    assert_eq!(three.shard_count(), 3);
    for e in &events {
        assert_eq!(
            three.shard_of(e.id).await.unwrap(),
            placed[&e.id],
            "event {}",
            e.id
        );
        assert_eq!(
            three.event(e.id).await.unwrap().unwrap().sold,
            e.sold + if e.id == old.id { 2 } else { 1 }
        );
    }
    for j in &jobs {
        let p = three.purchase(j.job.purchase_id).await.unwrap().unwrap();
        assert_eq!(p.status, PurchaseStatus::Confirmed, "{}", j.job.purchase_id);
        assert_eq!(p.event_id, j.job.event_id);
    }
    assert_eq!(
        catalog(&dbs).await,
        catalog_before,
        "no catalog row changed"
    );
    assert_eq!(event_rows(&dbs, 0).await, rows_before[0]);
    assert_eq!(event_rows(&dbs, 1).await, rows_before[1]);
    assert!(
        event_rows(&dbs, 2).await.is_empty(),
        "nothing moved to the new shard"
    );

    // New events use all three.
    let mut new_shards = Vec::new();
    for _ in 0..3 {
        let e = three.create_event(&spec(1, 1)).await.unwrap();
        new_shards.push(three.shard_of(e.id).await.unwrap());
    }
    new_shards.sort_unstable();
    assert_eq!(new_shards, [0, 1, 2]);
    assert_eq!(event_rows(&dbs, 2).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reordered_shortened_or_mixed_url_list_is_refused() {
    let Some(mut dbs) = TestDatabases::new(2).await else {
        return;
    };
    let (a, b) = (dbs.url(0), dbs.url(1));
    let s = dbs.open().await;
    let e = s.create_event(&spec(1, 1)).await.unwrap();
    assert_eq!(s.shard_of(e.id).await.unwrap(), 1);
    drop(s);

    // Swapped: the first database it meets that recorded another place is named.
    let err = ShardedStore::open(&[b.clone(), a.clone()], 2)
        .await
        .unwrap_err();
    match &err {
        StoreError::ShardMismatch {
            given, recorded, ..
        } => {
            assert_eq!((*given, *recorded), (0, 1));
        }
        other => panic!("not a mismatch: {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("given as shard 0") && text.contains("is shard 1"),
        "{text}"
    );
    let err = AnyStore::open_all(&[a.clone(), b.clone(), b.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ShardMismatch {
                given: 2,
                recorded: 1,
                ..
            }
        ),
        "{err}"
    );

    // Removed: shard 0 alone knows events live on shard 1; shard 1 alone is no store.
    for alone in [&a, &b] {
        let err = AnyStore::open(alone).await.unwrap_err();
        assert!(matches!(err, StoreError::ShardConfig { .. }), "{err}");
    }
    let err = ShardedStore::open(std::slice::from_ref(&a), 2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("a URL was removed"), "{err}");

    // Not PostgreSQL, or no URL at all.
    let err = AnyStore::open_all(&[a.clone(), "sqlite://x.db".to_owned()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shard 1 (sqlite://x.db)"), "{err}");
    assert!(AnyStore::open_all(&Vec::<String>::new()).await.is_err());

    // A database with events of its own never becomes a shard other than 0.
    let other = dbs.add().await;
    let used = AnyStore::open(&other).await.unwrap();
    used.create_event(&spec(1, 1)).await.unwrap();
    drop(used);
    let err = ShardedStore::open(&[a.clone(), b.clone(), other], 2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("holds events of its own"), "{err}");

    // The right order still opens.
    ShardedStore::open(&[a, b], 2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_a_worker_over_shards_answer_purchases_on_every_shard() {
    let Some(dbs) = TestDatabases::new(2).await else {
        return;
    };
    let store = Arc::new(AnyStore::open_all(&dbs.urls()).await.unwrap());
    let queue = Arc::new(MemoryQueue::new(MemoryQueueConfig::default()));
    let api = start_api_over(
        Arc::clone(&store),
        Arc::clone(&queue),
        Arc::new(ticket_svc::line::MemoryLineLog::new()),
        ApiConfig::default(),
        ticket_svc::testing::test_access(),
    )
    .await;
    let first = create_event(api.addr, 10, 4).await;
    let second = create_event(api.addr, 10, 4).await;
    let shard_of = |id: i64| u8::try_from(id % 2).unwrap();

    let mut ids = Vec::new();
    for event in [first, second] {
        let plain = ticket_svc::testing::buy(api.addr, event, "ann", 2, None).await;
        assert_eq!(plain.status, StatusCode::ACCEPTED, "{}", plain.text);
        let keyed = ticket_svc::testing::buy(api.addr, event, "bob", 1, Some("k-1")).await;
        assert_eq!(keyed.status, StatusCode::ACCEPTED, "{}", keyed.text);
        for r in [plain, keyed] {
            let id: PurchaseId = r.json["purchase_id"].as_str().unwrap().parse().unwrap();
            assert_eq!(id.shard(), shard_of(event), "purchase of event {event}");
            // Pending until decided, found on its shard.
            let g = get(api.addr, &format!("/purchases/{id}")).await;
            assert_eq!(g.status, StatusCode::OK, "{}", g.text);
            assert_eq!(g.json["event_id"], event);
            ids.push((id, event));
        }
    }
    assert_eq!(
        ids.iter().map(|(id, _)| id.is_minted()).collect::<Vec<_>>(),
        [true, false, true, false]
    );

    // A worker (with its /metrics) decides them; every purchase is then confirmed.
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let stop = CancellationToken::new();
    let workers = tokio::spawn(run_workers(
        Arc::clone(&store),
        Arc::clone(&queue),
        1,
        WorkerConfig::default(),
        Some(metrics),
        stop.clone(),
    ));
    for (id, event) in &ids {
        let path = format!("/purchases/{id}");
        plumbing::testing::wait_until(
            "the purchase is decided",
            Duration::from_secs(20),
            async || get(api.addr, &path).await.json["status"] == "confirmed",
        )
        .await;
        let g = get(api.addr, &path).await;
        assert_eq!(g.json["event_id"], *event);
    }
    for event in [first, second] {
        let e = get(api.addr, &format!("/events/{event}")).await;
        assert_eq!(e.json["sold"], 3);
    }
    let text = get(metrics_addr, "/metrics").await.text;
    for shard in 0..2 {
        assert!(
            text.contains(&format!(
                "ticket_store_shard_decisions_total{{shard=\"{shard}\"}}"
            )),
            "{text}"
        );
    }
    stop.cancel();
    workers.await.unwrap().unwrap();
    api.stop().await;
}
