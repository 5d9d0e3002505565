//! The workers against the in-memory queue and SQLite: no oversell and first come, first served
//! under concurrent workers, crashes and redeliveries; batching; shutdown; queue outages. Store
//! failures and dead letters are in `store_failures`, on the helpers here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use ticket_svc::domain::{
    Decision, Event, EventId, EventSpec, Ledger, LinePace, Position, Purchase, PurchaseId,
    PurchaseJob, PurchaseStatus, QueuedJob, RejectReason, decide_in_order,
};
use ticket_svc::http::ApiConfig;
use ticket_svc::metrics::Metrics;
use ticket_svc::queue::{JobConsumer, Lane, MemoryQueue, MemoryQueueConfig, PurchaseQueue};
use ticket_svc::store::{RecordedPace, SqliteStore, Store, StoreError};
use ticket_svc::worker::{Worker, WorkerConfig};

use ticket_svc::testing::{create_event, get, start_api, test_deps};

mod store_failures;

/// SQLite with failures on demand.
#[derive(Clone)]
struct Faulty {
    inner: Arc<SqliteStore>,
    transient_failures_left: Arc<AtomicU32>,
    always_fail: Arc<AtomicBool>,
    /// `mark_failed` calls that fail transiently before it works again.
    mark_failed_failures_left: Arc<AtomicU32>,
    poison: Arc<Mutex<HashSet<PurchaseId>>>,
    slow: Duration,
    /// The size of every batch decided, in order.
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Faulty {
    fn new(inner: Arc<SqliteStore>) -> Self {
        Self {
            inner,
            transient_failures_left: Arc::new(AtomicU32::new(0)),
            always_fail: Arc::new(AtomicBool::new(false)),
            mark_failed_failures_left: Arc::new(AtomicU32::new(0)),
            poison: Arc::new(Mutex::new(HashSet::new())),
            slow: Duration::ZERO,
            batches: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl Store for Faulty {
    async fn create_event(&self, spec: &EventSpec) -> Result<Event, StoreError> {
        self.inner.create_event(spec).await
    }
    async fn event(&self, id: EventId) -> Result<Option<Event>, StoreError> {
        self.inner.event(id).await
    }
    async fn record_pending(&self, job: &QueuedJob) -> Result<Position, StoreError> {
        self.inner.record_pending(job).await
    }
    async fn purchase(&self, id: PurchaseId) -> Result<Option<Purchase>, StoreError> {
        self.inner.purchase(id).await
    }
    async fn decide_batch(&self, jobs: &[QueuedJob]) -> Result<Vec<Decision>, StoreError> {
        let unavailable = || StoreError::Unavailable {
            reason: "injected".into(),
        };
        if self.always_fail.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        if self
            .transient_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(unavailable());
        }
        let is_poisoned = {
            let poison = self.poison.lock().unwrap();
            jobs.iter().any(|j| poison.contains(&j.job.purchase_id))
        };
        if is_poisoned {
            return Err(StoreError::Corrupt {
                what: "injected poison".into(),
            });
        }
        if !self.slow.is_zero() {
            tokio::time::sleep(self.slow).await;
        }
        let decided = self.inner.decide_batch(jobs).await;
        if decided.is_ok() {
            self.batches.lock().unwrap().push(jobs.len());
        }
        decided
    }
    async fn mark_failed(&self, job: &QueuedJob) -> Result<PurchaseStatus, StoreError> {
        if self
            .mark_failed_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable {
                reason: "injected".into(),
            });
        }
        self.inner.mark_failed(job).await
    }
    async fn event_purchases(
        &self,
        event: EventId,
        limit: u32,
    ) -> Result<Vec<Purchase>, StoreError> {
        self.inner.event_purchases(event, limit).await
    }
    async fn seal_line(&self, event: EventId, size: u64) -> Result<u64, StoreError> {
        self.inner.seal_line(event, size).await
    }
    async fn line_pace(&self, event: EventId) -> Result<Option<LinePace>, StoreError> {
        self.inner.line_pace(event).await
    }
    async fn record_line_pace(
        &self,
        event: EventId,
        current: Option<LinePace>,
        next: LinePace,
    ) -> Result<RecordedPace, StoreError> {
        self.inner.record_line_pace(event, current, next).await
    }
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.inner.check_ready().await
    }
}

fn fast_config(batch: usize) -> WorkerConfig {
    WorkerConfig {
        batch_max_jobs: batch,
        fetch_wait: Duration::from_millis(50),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        // The nack path at once; waiting out an outage in place has its own tests.
        store_patience: Duration::ZERO,
        ..Default::default()
    }
}

struct Workers {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Workers {
    fn start<S: Store + Clone>(
        n: usize,
        store: &S,
        queue: &Arc<MemoryQueue>,
        metrics: &Arc<Metrics>,
        config: WorkerConfig,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for i in 0..n {
            let w = Worker::new(
                Arc::new(store.clone()),
                Arc::clone(queue),
                Arc::clone(metrics),
                config.clone(),
                format!("w{i}"),
            );
            let token = shutdown.clone();
            tasks.spawn(async move { w.run(token).await });
        }
        Self { shutdown, tasks }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(r) = self.tasks.join_next().await {
                r.unwrap();
            }
        })
        .await
        .expect("workers stop within 10 s of shutdown");
    }
}

async fn wait_until(what: &str, done: impl AsyncFnMut() -> bool) {
    plumbing::testing::wait_until(what, Duration::from_secs(20), done).await;
}

async fn enqueue(store: &impl Store, queue: &MemoryQueue, job: PurchaseJob) -> QueuedJob {
    let e = queue.enqueue(&job).await.unwrap();
    let q = QueuedJob {
        job,
        position: e.position,
    };
    store.record_pending(&q).await.unwrap();
    q
}

use ticket_svc::testing::purchase as job;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_crashes_and_redeliveries_never_oversell_and_serve_in_order() {
    let b = test_deps(MemoryQueueConfig {
        partitions: 4,
        max_attempts: 100,
        ..Default::default()
    })
    .await;
    let store = (*b.store).clone();
    let mut events = Vec::new();
    for tickets in [40, 100, 7] {
        let spec = EventSpec::new("DJ night", tickets, 4).unwrap();
        events.push(store.create_event(&spec).await.unwrap());
    }
    let mut rng = SmallRng::seed_from_u64(7);
    let mut queued = Vec::new();
    for _ in 0..450 {
        let e = &events[rng.random_range(0..events.len())];
        let buyer = format!("buyer{}", rng.random_range(0..40));
        let q = enqueue(&store, &b.queue, job(e.id, &buyer, rng.random_range(1..=4))).await;
        queued.push(q);
    }

    // Chaos first: one worker commits a batch and dies before acking; another dies mid-batch.
    for _ in 0..3 {
        let mut c = b.queue.consumer(Lane::Purchases, "crash").await.unwrap();
        let got = c.fetch(20, Duration::ZERO).await.unwrap();
        let jobs: Vec<_> = got.iter().map(|d| d.job.clone()).collect();
        store.decide_batch(&jobs).await.unwrap();
        drop(c);
        let mut c = b.queue.consumer(Lane::Purchases, "killed").await.unwrap();
        c.fetch(20, Duration::ZERO).await.unwrap();
        drop(c);
    }

    let workers = Workers::start(3, &store, &b.queue, &b.metrics, fast_config(16));
    // More chaos while they run: a worker that takes a batch and dies without a word.
    for _ in 0..5 {
        let mut c = b.queue.consumer(Lane::Purchases, "killed").await.unwrap();
        c.fetch(8, Duration::from_millis(20)).await.unwrap();
        drop(c);
    }
    wait_until("every job is acked", async || {
        b.queue.stats().purchases_lag == 0
    })
    .await;
    workers.stop().await;

    // The reference: the sale rules applied to each event's line in position order.
    let mut reference = Ledger::new();
    for e in &events {
        reference.add_event(e.id, e.tickets, e.max_per_buyer, 0);
    }
    let mut by_position = queued.clone();
    by_position.sort_by_key(|q| (q.job.event_id, q.position));
    let expected: HashMap<PurchaseId, PurchaseStatus> = by_position
        .iter()
        .zip(decide_in_order(&mut reference, &by_position))
        .map(|(q, d)| (q.job.purchase_id, d.status))
        .collect();

    for e in &events {
        let stored = store.event(e.id).await.unwrap().unwrap();
        let purchases = store.event_purchases(e.id, 10_000).await.unwrap();
        assert_eq!(
            purchases.len(),
            queued.iter().filter(|q| q.job.event_id == e.id).count()
        );
        let confirmed: u32 = purchases
            .iter()
            .filter(|p| p.status == PurchaseStatus::Confirmed)
            .map(|p| p.quantity)
            .sum();
        assert!(stored.sold <= stored.tickets, "oversold {stored:?}");
        assert_eq!(stored.sold, confirmed);
        let mut per_buyer: HashMap<&str, u32> = HashMap::new();
        for p in &purchases {
            assert!(p.status.is_final(), "{p:?} never decided");
            assert_eq!(p.status, expected[&p.id], "decided out of order: {p:?}");
            if p.status == PurchaseStatus::Confirmed {
                *per_buyer.entry(&p.buyer).or_default() += p.quantity;
            }
        }
        assert!(per_buyer.values().all(|n| *n <= e.max_per_buyer));
        // First come, first served.
        for (i, early) in purchases.iter().enumerate() {
            if early.status != PurchaseStatus::Rejected(RejectReason::SoldOut) {
                continue;
            }
            for late in &purchases[i + 1..] {
                assert!(
                    !(late.status == PurchaseStatus::Confirmed && early.quantity <= late.quantity),
                    "{late:?} confirmed after {early:?} was sold out"
                );
            }
        }
    }
    assert_eq!(b.queue.stats().dead_lettered, 0);
}

async fn all_final(store: &impl Store, queued: &[QueuedJob]) -> bool {
    for q in queued {
        let p = store.purchase(q.job.purchase_id).await.unwrap();
        if !p.is_some_and(|p| p.status.is_final()) {
            return false;
        }
    }
    true
}

/// A queue, a store with failures on demand, and an event with `tickets` (at most 4 a buyer).
async fn faulty_with_event(
    queue: MemoryQueueConfig,
    tickets: u32,
) -> (ticket_svc::testing::TestDeps, Faulty, Event) {
    let b = test_deps(queue).await;
    let store = Faulty::new(Arc::clone(&b.store));
    let e = store
        .create_event(&EventSpec::new("x", tickets.into(), 4).unwrap())
        .await
        .unwrap();
    (b, store, e)
}

/// One partition (one ordered lane), a recording store and an event with 100 tickets.
async fn one_lane_with_an_event() -> (ticket_svc::testing::TestDeps, Faulty, Event) {
    faulty_with_event(
        MemoryQueueConfig {
            partitions: 1,
            ..Default::default()
        },
        100,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_small_batch_the_worker_lingers_so_the_next_one_is_bigger() {
    let (b, store, e) = one_lane_with_an_event().await;
    let linger = Duration::from_millis(500);
    let config = WorkerConfig {
        linger,
        ..fast_config(64)
    };
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, config);
    // A lone purchase on a quiet queue waits for no linger: the worker is parked in the fetch.
    // The wait is generous (a loaded CI host), and still below the linger.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let first = enqueue(&store, &b.queue, job(e.id, "ann", 1)).await;
    wait_until("the lone purchase is decided", async || {
        all_final(&store, std::slice::from_ref(&first)).await
    })
    .await;
    assert!(
        started.elapsed() < linger,
        "a lone purchase took {:?}",
        started.elapsed()
    );
    // Its batch was small, so the worker lingers: ten purchases arriving meanwhile are decided
    // together.
    let mut rest = Vec::new();
    for i in 0..10 {
        rest.push(enqueue(&store, &b.queue, job(e.id, &format!("b{i}"), 1)).await);
    }
    wait_until("the ten are decided", async || {
        all_final(&store, &rest).await
    })
    .await;
    workers.stop().await;
    assert_eq!(*store.batches.lock().unwrap(), vec![1, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_followed_by_the_next_without_lingering() {
    let (b, store, e) = one_lane_with_an_event().await;
    let mut queued = Vec::new();
    for i in 0..35 {
        queued.push(enqueue(&store, &b.queue, job(e.id, &format!("b{i}"), 1)).await);
    }
    // Three full batches and a small one. A linger after each full batch would take 30 s.
    let config = WorkerConfig {
        linger: Duration::from_secs(10),
        ..fast_config(10)
    };
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, config);
    wait_until("all are decided", async || all_final(&store, &queued).await).await;
    workers.stop().await;
    assert_eq!(*store.batches.lock().unwrap(), vec![10, 10, 10, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_batch_commits_and_acks_it_first() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let mut store = Faulty::new(Arc::clone(&b.store));
    store.slow = Duration::from_millis(300);
    let e = store
        .create_event(&EventSpec::new("x", 50, 4).unwrap())
        .await
        .unwrap();
    let mut qs = Vec::new();
    for i in 0..3 {
        qs.push(enqueue(&store, &b.queue, job(e.id, &format!("b{i}"), 1)).await);
    }
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, fast_config(16));
    wait_until("the worker is inside its batch", async || {
        b.metrics.workers_busy.get() == 1
    })
    .await;
    workers.stop().await;
    assert_eq!(b.queue.stats().purchases_lag, 0, "the batch was acked");
    for q in &qs {
        let p = store.purchase(q.job.purchase_id).await.unwrap().unwrap();
        assert_eq!(p.status, PurchaseStatus::Confirmed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_through_the_api_reach_a_final_state_without_oversell() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let api = start_api(&b, ApiConfig::default()).await;
    let store = (*b.store).clone();
    let workers = Workers::start(2, &store, &b.queue, &b.metrics, fast_config(32));
    let event = create_event(api.addr, 20, 4).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let r = ticket_svc::testing::buy(api.addr, event, &format!("b{}", i % 15), 1 + i % 3, None)
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        ids.push(r.json["purchase_id"].as_str().unwrap().to_owned());
    }
    let mut confirmed = 0;
    for id in &ids {
        let mut status = String::new();
        wait_until("the purchase is decided", async || {
            let r = get(api.addr, &format!("/purchases/{id}")).await;
            status = r.json["status"].as_str().unwrap().to_owned();
            if status == "confirmed" {
                confirmed += r.json["quantity"].as_u64().unwrap();
            }
            if status == "rejected" {
                assert!(
                    ["sold_out", "limit_exceeded"].contains(&r.json["reason"].as_str().unwrap())
                );
            }
            status != "pending"
        })
        .await;
    }
    let ev = get(api.addr, &format!("/events/{event}")).await;
    assert_eq!(ev.json["sold"], confirmed);
    assert!(confirmed <= 20);
    assert_eq!(ev.json["remaining"], 20 - confirmed);
    let decided: u64 = ["confirmed", "sold_out", "limit_exceeded"]
        .into_iter()
        .map(|outcome| {
            b.metrics
                .decisions
                .get_or_create(&ticket_svc::metrics::OutcomeLabels { outcome })
                .get()
        })
        .sum();
    assert_eq!(
        decided, 40,
        "ticket_worker_decisions_total counts each decision once"
    );
    workers.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_out_a_queue_outage_and_rejoins() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let store = (*b.store).clone();
    let e = store
        .create_event(&EventSpec::new("x", 5, 4).unwrap())
        .await
        .unwrap();
    let q = enqueue(&store, &b.queue, job(e.id, "ann", 1)).await;
    b.queue.set_available(false);
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, fast_config(8));
    // Down at start (cannot join); then up; then down mid-run (fetches fail, it rejoins).
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.queue.set_available(true);
    wait_until("the first purchase is decided", async || {
        all_final(&store, std::slice::from_ref(&q)).await
    })
    .await;
    b.queue.set_available(false);
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.queue.set_available(true);
    let later = enqueue(&store, &b.queue, job(e.id, "bob", 1)).await;
    wait_until("a purchase after the outage is decided", async || {
        all_final(&store, std::slice::from_ref(&later)).await
    })
    .await;
    workers.stop().await;
}
