//! The stack as separate processes (the runner behind `up --cluster`), on a PostgreSQL database
//! of its own: one process of each kind SIGKILLed mid-rush, every invariant held, nothing
//! accepted lost, and the crowd's re-sends absorbing every failure. Skipped, with a printed
//! reason, when `TICKET_TEST_POSTGRES_URL` is not set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ticket_stack::cluster::{self, ClusterConfig};
use ticket_stack::rush::{Mailbox, RushConfig, Target};
use ticket_svc::domain::EventSpec;
use ticket_svc::store::Store;
use ticket_svc::testing::TestDatabase;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One cluster at a time: each is a dozen processes with PostgreSQL connection pools, and two at
/// once on a 2-core machine ran the server out of connections ("too many clients") and made
/// the kill test's restart count depend on the other test.
static ONE_CLUSTER: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

/// A cluster over `db` whose APIs send login codes to `mailbox` (the crowd's).
fn config(dir: &std::path::Path, db: &[&TestDatabase], mailbox: &Mailbox) -> ClusterConfig {
    let db: Vec<String> = db.iter().map(|d| d.url.clone()).collect();
    let loopback0: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut c = ClusterConfig::new(env!("CARGO_BIN_EXE_ticket-svc"), dir, &db);
    c.listen = loopback0;
    c.admin_listen = loopback0;
    c.status_listen = Some(loopback0);
    c.drain_grace = Duration::from_secs(10);
    c.login_sender = mailbox.url();
    c
}

async fn mailbox() -> Arc<Mailbox> {
    Arc::new(Mailbox::bind(([127, 0, 0, 1], 0).into()).await.unwrap())
}

/// The broker node that leads now.
async fn broker_leader(c: &cluster::Cluster) -> u64 {
    let list = c
        .addresses
        .brokers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) =
            broker::client::Client::connect(broker::client::ClientConfig::new(list.clone())).await
            && let Ok(m) = client.metadata().await
            && let Some((id, _)) = m.leader
        {
            return id;
        }
        assert!(Instant::now() < deadline, "no broker leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_of_each_kind_killed_mid_rush_loses_nothing_and_no_buyer_sees_it() {
    let _one = ONE_CLUSTER.lock().await;
    // On two shards: the event is on shard 1, so every purchase id carries its shard.
    let (Some(db0), Some(db1)) = (
        TestDatabase::create("ticket_cluster").await,
        TestDatabase::create("ticket_cluster").await,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mailbox = mailbox().await;
    let c = cluster::start(config(dir.path(), &[&db0, &db1], &mailbox))
        .await
        .unwrap();
    let event = c
        .store
        .create_event(&EventSpec::new("DJ night", 1_000, 4).unwrap())
        .await
        .unwrap();
    assert_eq!(c.store.shard_of(event.id).await.unwrap(), 1);
    let urls = c.addresses.public_urls();
    let mut rush = RushConfig::verified(
        Target::resolve_all(&urls).await.unwrap(),
        event.id,
        3_000,
        32,
    );
    // 10 s of buyers at an even pace, so every kill lands mid-rush.
    rush.rate = Some(300.0);
    rush.show_progress = false;
    rush.require_answers = true;
    rush.verify_timeout = Duration::from_secs(90);
    // Logged in first, so that every kill lands in the rush itself.
    let logins = ticket_stack::rush::login::log_in_all(
        &rush,
        &ticket_stack::rush::Codes::from(Arc::clone(&mailbox)),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(logins.failed, 0);
    let start = Instant::now();
    let killer = async {
        let mut killed = Vec::new();
        for (k, kind) in ["balancer 1", "api 2", "broker", "worker 1"]
            .into_iter()
            .enumerate()
        {
            tokio::time::sleep_until(start + Duration::from_millis(1_500 + 2_000 * k as u64)).await;
            // The broker that leads: the kill that costs the most (an election, a new leader).
            let name = match kind {
                "broker" => format!("broker {}", broker_leader(&c).await),
                other => other.to_owned(),
            };
            let p = c.process(&name).unwrap();
            assert!(p.kill(Duration::from_secs(1)).await, "{name} was running");
            killed.push(name);
        }
        killed
    };
    let (report, killed) = tokio::join!(
        ticket_stack::rush::run_logged_in(rush, logins, CancellationToken::new()),
        killer
    );
    let report = report.unwrap();
    assert!(report.is_ok(), "killed {killed:?}\n{report}");
    assert_eq!(report.failed, 0, "{report}");
    assert!(
        report.elapsed > Duration::from_secs(8),
        "every kill came before the rush's end: {report}"
    );
    let v = report.verification.as_ref().unwrap();
    assert_eq!(v.pending, 0, "every 202 decided: {report}");
    let sold = c.store.event(event.id).await.unwrap().unwrap().sold;
    assert_eq!(sold, 1_000, "3,000 buyers of 1-4 tickets sell out 1,000");
    // Every killed process came back on its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in c.processes() {
        while p.state().pid().is_none() {
            assert!(
                Instant::now() < deadline,
                "{} never came back",
                p.spec().name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut restarted: Vec<(String, u64, u64)> = c
        .processes()
        .iter()
        .filter(|p| p.state().restarts() > 0)
        .map(|p| (p.spec().name(), p.state().restarts(), p.state().crashes()))
        .collect();
    restarted.sort();
    let mut expected: Vec<(String, u64, u64)> =
        killed.iter().map(|name| (name.clone(), 1, 0)).collect();
    expected.sort();
    if restarted != expected {
        for p in c.processes() {
            let log = std::fs::read_to_string(&p.spec().log).unwrap_or_default();
            eprintln!("--- {}\n{log}", p.spec().name());
        }
    }
    assert_eq!(
        restarted, expected,
        "each killed process started once more, none crashed"
    );
    // The runner's page and metrics say the same.
    let status = c.addresses.status.unwrap();
    let page = plumbing::testing::http_get(status, "/status")
        .await
        .unwrap()
        .body;
    assert!(
        page.starts_with("ticketrush cluster: 10 processes, 10 up"),
        "{page}"
    );
    let metrics = plumbing::testing::http_get(status, "/metrics")
        .await
        .unwrap()
        .body;
    for name in &killed {
        let kind = name.split(' ').next().unwrap();
        let series =
            format!(r#"ticket_cluster_process_restarts_total{{process="{name}",kind="{kind}"}} 1"#);
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    assert!(metrics.contains(r#"ticket_cluster_process_up{process="api 2",kind="api"} 1"#));
    c.stop().await;
}

/// API processes running now.
fn apis(c: &cluster::Cluster) -> usize {
    c.processes()
        .iter()
        .filter(|p| p.spec().kind == cluster::process::Kind::Api)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_apis_get_company_and_idle_ones_are_drained_away_without_a_failed_request() {
    let _one = ONE_CLUSTER.lock().await;
    let Some(db) = TestDatabase::create("ticket_cluster").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mailbox = mailbox().await;
    let mut config = config(dir.path(), &[&db], &mailbox);
    config.balancers = 2;
    config.brokers = 1;
    config.workers = 1;
    config.apis = 1;
    config.max_apis = 3;
    config.api_busy = 8;
    config.scale_check_every = Duration::from_millis(200);
    let c = cluster::start(config).await.unwrap();
    let event = c
        .store
        .create_event(&EventSpec::new("DJ night", 100_000, 4).unwrap())
        .await
        .unwrap();
    let urls = c.addresses.public_urls();
    let targets = Target::resolve_all(&urls).await.unwrap();
    let crowd = |buyers: u64, concurrency: usize, rate: Option<f64>, seed: u64| {
        let mut rush = RushConfig::verified(targets.clone(), event.id, buyers, concurrency);
        rush.rate = rate;
        rush.seed = seed;
        rush.verify = false;
        rush.show_progress = false;
        rush.require_answers = true;
        rush
    };

    // Busy: 64 buyers in flight at one API. Watch the API count while they run.
    let busy = ticket_stack::rush::run(
        crowd(3_000, 64, None, 1),
        Arc::clone(&mailbox),
        CancellationToken::new(),
    );
    let mut most = 1;
    tokio::pin!(busy);
    let busy = loop {
        tokio::select! {
            report = &mut busy => break report.unwrap(),
            () = tokio::time::sleep(Duration::from_millis(50)) => most = most.max(apis(&c)),
        }
    };
    assert!(busy.is_ok(), "{busy}");
    assert!(
        most >= 2,
        "an API was added under load (at most {most} ran)"
    );

    // Idle: a trickle of buyers while the added APIs are drained away; none of them may see a
    // failure, and none needs a re-send either.
    let idle = ticket_stack::rush::run(
        crowd(150, 4, Some(25.0), 2),
        Arc::clone(&mailbox),
        CancellationToken::new(),
    );
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while apis(&c) > 1 {
            assert!(Instant::now() < deadline, "{} APIs still run", apis(&c));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (idle, ()) = tokio::join!(idle, watch);
    let idle = idle.unwrap();
    assert!(idle.is_ok(), "{idle}");
    assert_eq!((idle.failed, idle.resent), (0, 0), "{idle}");
    assert_eq!(apis(&c), 1, "back to the APIs the cluster started with");
    let status = c.addresses.status.unwrap();
    let metrics = plumbing::testing::http_get(status, "/metrics")
        .await
        .unwrap()
        .body;
    assert!(metrics.contains("ticket_cluster_apis 1"), "{metrics}");
    c.stop().await;
}

/// Processes of `kind` running now.
fn running(c: &cluster::Cluster, kind: cluster::process::Kind) -> usize {
    c.processes()
        .iter()
        .filter(|p| p.spec().kind == kind)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_follow_the_queue_up_and_back_down() {
    let _one = ONE_CLUSTER.lock().await;
    use cluster::process::Kind;
    let Some(db) = TestDatabase::create("ticket_cluster").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mailbox = mailbox().await;
    let mut config = config(dir.path(), &[&db], &mailbox);
    config.balancers = 1;
    config.brokers = 1;
    config.apis = 2;
    config.workers = 1;
    config.max_workers = 3;
    config.scale_up_lag = 2;
    config.scale_check_every = Duration::from_millis(200);
    let c = cluster::start(config).await.unwrap();
    // Four events, so their lines are on more than one partition: one worker per partition
    // with a backlog can help.
    let targets = Target::resolve_all(&c.addresses.public_urls())
        .await
        .unwrap();
    let mut rushes = tokio::task::JoinSet::new();
    for seed in 1..=4 {
        let event = c
            .store
            .create_event(&EventSpec::new("DJ night", 100_000, 4).unwrap())
            .await
            .unwrap();
        let mut rush = RushConfig::verified(targets.clone(), event.id, 1_500, 16);
        rush.seed = seed;
        rush.verify = false;
        rush.show_progress = false;
        rush.require_answers = true;
        rushes.spawn(ticket_stack::rush::run(
            rush,
            Arc::clone(&mailbox),
            CancellationToken::new(),
        ));
    }
    let mut most = 1;
    while !rushes.is_empty() {
        tokio::select! {
            done = rushes.join_next() => {
                let report = done.unwrap().unwrap().unwrap();
                assert!(report.is_ok(), "{report}");
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                most = most.max(running(&c, Kind::Worker));
            }
        }
    }
    assert!(
        most >= 2,
        "a worker was added while purchases were queued (at most {most})"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while running(&c, Kind::Worker) > 1 {
        assert!(
            Instant::now() < deadline,
            "the added workers were never stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = c.addresses.status.unwrap();
    let metrics = plumbing::testing::http_get(status, "/metrics")
        .await
        .unwrap()
        .body;
    assert!(metrics.contains("ticket_cluster_workers 1"), "{metrics}");
    assert!(metrics.contains("ticket_cluster_worker_lag 0"), "{metrics}");
    c.stop().await;
}
