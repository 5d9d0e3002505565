//! Store failures under the workers: transient errors waited out in place and then nacked,
//! dead letters marked failed (over the real broker too), poison jobs, and a full disk.

use super::*;

/// A queue that dead-letters a job at its second failed delivery: a nack per store failure
/// would show at once.
fn two_attempts() -> MemoryQueueConfig {
    MemoryQueueConfig {
        max_attempts: 2,
        ..Default::default()
    }
}

/// Waits until `id` reads `rejected: failed` (its job was dead-lettered and marked).
async fn until_failed(what: &str, store: &impl Store, id: PurchaseId) {
    wait_until(what, async || {
        store
            .purchase(id)
            .await
            .unwrap()
            .is_some_and(|p| p.status == PurchaseStatus::Rejected(RejectReason::Failed))
    })
    .await;
}

/// The tests' worker config, waiting out a transient store error for `patience` before a nack.
fn patient(patience: Duration) -> WorkerConfig {
    WorkerConfig {
        store_patience: patience,
        ..fast_config(8)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_store_error_is_nacked_and_retried() {
    let b = test_deps(MemoryQueueConfig::default()).await;
    let store = Faulty::new(Arc::clone(&b.store));
    store.transient_failures_left.store(3, Ordering::SeqCst);
    let e = store
        .create_event(&EventSpec::new("x", 5, 4).unwrap())
        .await
        .unwrap();
    let q = enqueue(&store, &b.queue, job(e.id, "ann", 2)).await;
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, fast_config(8));
    wait_until("the purchase is decided", async || {
        store
            .purchase(q.job.purchase_id)
            .await
            .unwrap()
            .is_some_and(|p| p.status.is_final())
    })
    .await;
    workers.stop().await;
    let p = store.purchase(q.job.purchase_id).await.unwrap().unwrap();
    assert_eq!(p.status, PurchaseStatus::Confirmed);
    assert!(b.metrics.nacks.get() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_within_the_patience_spends_no_delivery_attempt() {
    // Two attempts: a nack per failure would dead-letter these jobs at the second one.
    let (b, store, e) = faulty_with_event(two_attempts(), 5).await;
    let mut queued = Vec::new();
    for buyer in ["ann", "bob", "cat"] {
        queued.push(enqueue(&store, &b.queue, job(e.id, buyer, 1)).await);
    }
    store.transient_failures_left.store(30, Ordering::SeqCst);
    let config = patient(Duration::from_secs(10));
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, config);
    wait_until("all are decided", async || all_final(&store, &queued).await).await;
    workers.stop().await;
    for q in &queued {
        let p = store.purchase(q.job.purchase_id).await.unwrap().unwrap();
        assert_eq!(p.status, PurchaseStatus::Confirmed);
    }
    assert_eq!(
        b.metrics.nacks.get(),
        0,
        "the outage was waited out in place"
    );
    assert!(b.metrics.store_retries.get() >= 30);
    assert_eq!(b.queue.stats().dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_past_the_patience_is_nacked_until_dead_lettered() {
    let (b, store, e) = faulty_with_event(two_attempts(), 5).await;
    store.always_fail.store(true, Ordering::SeqCst);
    let q = enqueue(&store, &b.queue, job(e.id, "ann", 1)).await;
    let config = patient(Duration::from_millis(50));
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, config);
    until_failed("the purchase is failed", &store, q.job.purchase_id).await;
    workers.stop().await;
    assert_eq!(b.metrics.nacks.get(), 2, "one nack per delivery attempt");
    assert!(b.metrics.store_retries.get() >= 2);
    assert_eq!(b.queue.stats().dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_out_the_patience_and_loses_no_job() {
    let (b, store, e) = faulty_with_event(MemoryQueueConfig::default(), 5).await;
    store.always_fail.store(true, Ordering::SeqCst);
    let q = enqueue(&store, &b.queue, job(e.id, "ann", 1)).await;
    let config = patient(Duration::from_secs(600));
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, config);
    wait_until("the worker is retrying in place", async || {
        b.metrics.store_retries.get() >= 3
    })
    .await;
    // `stop` fails the test if the workers take over 10 s.
    workers.stop().await;
    assert_eq!(
        b.queue.stats().purchases_lag,
        1,
        "the job is still queued for the next worker"
    );
    // The store comes back and a new worker decides the job.
    store.always_fail.store(false, Ordering::SeqCst);
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, fast_config(8));
    wait_until("the purchase is decided", async || {
        all_final(&store, std::slice::from_ref(&q)).await
    })
    .await;
    workers.stop().await;
    let p = store.purchase(q.job.purchase_id).await.unwrap().unwrap();
    assert_eq!(p.status, PurchaseStatus::Confirmed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_jobs_mark_their_purchases_failed() {
    let b = test_deps(MemoryQueueConfig {
        max_attempts: 3,
        ..Default::default()
    })
    .await;
    let store = Faulty::new(Arc::clone(&b.store));
    store.always_fail.store(true, Ordering::SeqCst);
    let e = store
        .create_event(&EventSpec::new("x", 5, 4).unwrap())
        .await
        .unwrap();
    let a = enqueue(&store, &b.queue, job(e.id, "ann", 1)).await;
    let c = enqueue(&store, &b.queue, job(e.id, "bob", 1)).await;
    let workers = Workers::start(2, &store, &b.queue, &b.metrics, fast_config(8));
    wait_until("both purchases are failed", async || {
        let mut n = 0;
        for q in [&a, &c] {
            if store
                .purchase(q.job.purchase_id)
                .await
                .unwrap()
                .unwrap()
                .status
                == PurchaseStatus::Rejected(RejectReason::Failed)
            {
                n += 1;
            }
        }
        n == 2
    })
    .await;
    workers.stop().await;
    assert_eq!(b.queue.stats().dead_lettered, 2);
    assert_eq!(store.event(e.id).await.unwrap().unwrap().sold, 0);
    assert_eq!(b.metrics.dead_letters.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_fails_alone_and_its_batch_mates_are_decided() {
    let (b, store, e) = faulty_with_event(
        MemoryQueueConfig {
            partitions: 1,
            max_attempts: 3,
            ..Default::default()
        },
        50,
    )
    .await;
    let mut qs = Vec::new();
    for i in 0..5 {
        qs.push(enqueue(&store, &b.queue, job(e.id, &format!("b{i}"), 1)).await);
    }
    store.poison.lock().unwrap().insert(qs[2].job.purchase_id);
    let workers = Workers::start(1, &store, &b.queue, &b.metrics, fast_config(16));
    wait_until("every purchase is final", async || {
        let mut all = true;
        for q in &qs {
            all &= store
                .purchase(q.job.purchase_id)
                .await
                .unwrap()
                .unwrap()
                .status
                .is_final();
        }
        all
    })
    .await;
    workers.stop().await;
    for (i, q) in qs.iter().enumerate() {
        let p = store.purchase(q.job.purchase_id).await.unwrap().unwrap();
        let want = if i == 2 {
            PurchaseStatus::Rejected(RejectReason::Failed)
        } else {
            PurchaseStatus::Confirmed
        };
        assert_eq!(p.status, want, "purchase {i}");
    }
    assert_eq!(store.event(e.id).await.unwrap().unwrap().sold, 4);
}

/// A test broker with a purchase queue on it (2 attempts per job), a store with failures on
/// demand, and an event with 5 tickets.
struct OverTheBroker {
    _broker: broker::testing::TestBroker,
    queue: Arc<ticket_svc::queue::BrokerQueue>,
    store: Faulty,
    event: Event,
    _dir: tempfile::TempDir,
}

impl OverTheBroker {
    async fn start(lease: Option<Duration>) -> Self {
        use ticket_svc::queue::{BrokerQueue, BrokerQueueConfig};
        let broker = broker::testing::TestBroker::start().await;
        let mut config = BrokerQueueConfig::new(broker.addr.to_string());
        config.max_attempts = 2;
        if let Some(lease) = lease {
            config.lease = lease;
        }
        let queue = Arc::new(
            BrokerQueue::connect(config, Duration::from_secs(5))
                .await
                .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(SqliteStore::open(dir.path().join("t.db")).await.unwrap());
        let store = Faulty::new(Arc::clone(&sqlite));
        let event = store
            .create_event(&EventSpec::new("x", 5, 4).unwrap())
            .await
            .unwrap();
        Self {
            _broker: broker,
            queue,
            store,
            event,
            _dir: dir,
        }
    }

    /// One worker (fast settings) on this queue and store, until the returned token is cancelled.
    fn worker(
        &self,
        metrics: &Arc<Metrics>,
        name: &str,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let worker = Worker::new(
            Arc::new(self.store.clone()),
            Arc::clone(&self.queue),
            Arc::clone(metrics),
            fast_config(16),
            name,
        );
        let token = shutdown.clone();
        (
            shutdown,
            tokio::spawn(async move { worker.run(token).await }),
        )
    }
}

/// Over the real broker: a crash after commit (redelivery reads back), then a store that keeps
/// failing (dead letter → `failed`, with its original position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_broker_redeliveries_read_back_and_dead_letters_fail() {
    let t = OverTheBroker::start(Some(Duration::from_secs(2))).await;
    let (queue, store, e) = (&t.queue, &t.store, &t.event);

    // A worker that commits its batch and dies before acking.
    let first = job(e.id, "ann", 2);
    let pos = queue.enqueue(&first).await.unwrap().position;
    let q1 = QueuedJob {
        job: first.clone(),
        position: pos,
    };
    store.record_pending(&q1).await.unwrap();
    {
        let mut c = queue.consumer(Lane::Purchases, "dies").await.unwrap();
        let got = c.fetch(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 1);
        store.decide_batch(&[got[0].job.clone()]).await.unwrap();
    }

    let metrics = Arc::new(Metrics::unregistered());
    let (shutdown, task) = t.worker(&metrics, "survivor");
    wait_until("the redelivered job is read back", async || {
        metrics
            .decisions
            .get_or_create(&ticket_svc::metrics::OutcomeLabels {
                outcome: "redelivered",
            })
            .get()
            >= 1
    })
    .await;
    assert_eq!(
        store.event(e.id).await.unwrap().unwrap().sold,
        2,
        "sold once"
    );

    // Now the store fails every batch: after the broker's attempts the job is dead-lettered.
    store.always_fail.store(true, Ordering::SeqCst);
    let doomed = job(e.id, "bob", 1);
    let doomed_pos = queue.enqueue(&doomed).await.unwrap().position;
    until_failed(
        "the dead-lettered purchase is failed",
        store,
        doomed.purchase_id,
    )
    .await;
    let p = store.purchase(doomed.purchase_id).await.unwrap().unwrap();
    assert_eq!(
        p.position, doomed_pos,
        "the original position travels with it"
    );
    assert_eq!(store.event(e.id).await.unwrap().unwrap().sold, 2);
    shutdown.cancel();
    task.await.unwrap();
}

/// Over the real broker: a dead letter whose purchase cannot be marked failed for longer than
/// the queue's attempts is not dead-lettered once more (into a topic nobody reads, its purchase
/// pending for good); it is retried until the mark succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_broker_a_dead_letter_is_retried_until_its_purchase_is_failed() {
    let t = OverTheBroker::start(None).await;
    let (queue, store, e) = (&t.queue, &t.store, &t.event);
    store.always_fail.store(true, Ordering::SeqCst);
    // Three times the attempts: nacked at once each time (no patience), the old group setting
    // would have dead-lettered it after the second.
    store.mark_failed_failures_left.store(6, Ordering::SeqCst);
    let doomed = job(e.id, "bob", 1);
    queue.enqueue(&doomed).await.unwrap();

    let metrics = Arc::new(Metrics::unregistered());
    let (shutdown, task) = t.worker(&metrics, "w");
    until_failed(
        "the dead-lettered purchase is failed",
        store,
        doomed.purchase_id,
    )
    .await;
    assert_eq!(store.mark_failed_failures_left.load(Ordering::SeqCst), 0);
    assert_eq!(metrics.dead_letters.get(), 1);
    shutdown.cancel();
    task.await.unwrap();
}

/// Writes `path` until the disk under it is full.
fn fill_disk(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// A full disk under SQLite: the batch's commit fails, the worker waits it out in place instead
/// of spending the jobs' two attempts, and once space is back every purchase is decided, none
/// failed, none sold twice. Needs root to mount a small tmpfs; skipped with a printed reason
/// otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_sqlite_is_waited_out_and_fails_no_purchase() {
    let mount_point = tempfile::tempdir().unwrap();
    let fs = match broker::testing::Tmpfs::mount(mount_point.path(), "4m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "skipped: a_full_disk_under_sqlite_is_waited_out_and_fails_no_purchase needs to mount a tmpfs ({why})"
            );
            return;
        }
    };
    let store = SqliteStore::open(mount_point.path().join("t.db"))
        .await
        .unwrap();
    let queue = Arc::new(MemoryQueue::new(two_attempts()));
    let metrics = Arc::new(Metrics::unregistered());
    let e = store
        .create_event(&EventSpec::new("x", 100, 4).unwrap())
        .await
        .unwrap();
    let mut queued = Vec::new();
    for i in 0..20 {
        queued.push(enqueue(&store, &queue, job(e.id, &format!("b{i}"), 2)).await);
    }
    let filler = mount_point.path().join("filler");
    fill_disk(&filler);

    let config = WorkerConfig {
        store_patience: Duration::from_secs(60),
        ..fast_config(64)
    };
    let workers = Workers::start(1, &store, &queue, &metrics, config);
    wait_until("the worker meets the full disk", async || {
        metrics.store_retries.get() >= 3
    })
    .await;
    assert!(
        !all_final(&store, &queued[..1]).await,
        "nothing could be decided on a full disk"
    );
    std::fs::remove_file(&filler).unwrap();
    wait_until("all are decided", async || all_final(&store, &queued).await).await;
    workers.stop().await;
    for q in &queued {
        let p = store.purchase(q.job.purchase_id).await.unwrap().unwrap();
        assert_eq!(p.status, PurchaseStatus::Confirmed, "{p:?}");
    }
    assert_eq!(store.event(e.id).await.unwrap().unwrap().sold, 40);
    assert_eq!(metrics.nacks.get(), 0);
    assert_eq!(queue.stats().dead_lettered, 0);
    drop(store);
    drop(fs);
}
