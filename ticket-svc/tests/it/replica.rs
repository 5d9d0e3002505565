//! A read replica that is a real PostgreSQL hot standby: a primary made with `initdb` and a
//! standby made from it with `pg_basebackup`, each on a free port in a temp dir, replicating by
//! PostgreSQL's own streaming replication. With the standby's replay paused, a purchase decided
//! on the primary is pending (or missing) on the replica, and the store must answer it from the
//! primary, never going back to pending; once replayed, the replica answers it. A primary given
//! as a replica is refused. Skipped, with a printed reason, where the PostgreSQL server programs
//! are not installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ticket_svc::domain::{EventSpec, PurchaseStatus};
use ticket_svc::store::{AnyStore, PostgresStore, ReplicaMetrics, Store};
use ticket_svc::testing::{pg_client, queued};

/// The directory of `initdb`, `pg_ctl` and `pg_basebackup`, if they are installed.
fn server_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists() && d.join("pg_basebackup").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The PostgreSQL programs refuse to run as root: as root they run as the `postgres` user.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// One PostgreSQL server of the test, stopped (immediately) when dropped.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

/// Runs a PostgreSQL program, as `postgres` when root; panics with its output if it fails.
fn run(bin: &Path, program: &str, args: &[&str]) {
    let path = bin.join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = cmd.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Server {
    fn start(bin: &Path, data: PathBuf, sockets: &Path, extra: &str) -> Self {
        let port = plumbing::testing::free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {extra}",
            sockets.display()
        );
        let log = data.with_extension("log");
        run(
            bin,
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        Self {
            bin: bin.to_path_buf(),
            data,
            port,
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            run(
                &self.bin,
                "pg_ctl",
                &[
                    "-D",
                    &self.data.display().to_string(),
                    "-m",
                    "immediate",
                    "stop",
                ],
            );
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_decided_purchases_and_never_turns_one_back_to_pending() {
    let Some(bin) = server_bin() else {
        eprintln!(
            "skipped: the PostgreSQL server programs (initdb, pg_basebackup) are not installed"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let primary_dir = dir.path().join("primary");
    let standby_dir = dir.path().join("standby");
    run(
        &bin,
        "initdb",
        &[
            "-D",
            &primary_dir.display().to_string(),
            "-U",
            "postgres",
            "--auth=trust",
        ],
    );
    let primary = Server::start(&bin, primary_dir, dir.path(), "-c wal_level=replica");
    run(
        &bin,
        "pg_basebackup",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
            "-D",
            &standby_dir.display().to_string(),
            "-R",
            "-X",
            "stream",
        ],
    );
    let standby = Server::start(&bin, standby_dir, dir.path(), "-c hot_standby=on");

    // The schema comes from the primary's migrations, replicated to the standby.
    let store = AnyStore::open_with_replicas(&[primary.url()], &[standby.url()])
        .await
        .unwrap();
    let event = store
        .create_event(&EventSpec::new("DJ night", 10, 4).unwrap())
        .await
        .unwrap();

    // Replay paused: the standby stops short of what follows.
    pg_client(&standby.url())
        .await
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let job = queued(event.id, "ann", 2, 1);
    store.record_pending(&job).await.unwrap();
    store
        .decide_batch(std::slice::from_ref(&job))
        .await
        .unwrap();
    let id = job.job.purchase_id;
    for _ in 0..20 {
        let seen = store.purchase(id).await.unwrap().unwrap();
        assert_eq!(seen.status, PurchaseStatus::Confirmed, "from the primary");
    }

    // Replay resumed: the standby catches up and answers the decided purchase itself.
    pg_client(&standby.url())
        .await
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    store.register_read_metrics(&mut registry);
    let served_by_replica = || {
        let text = {
            let mut t = String::new();
            prometheus_client::encoding::text::encode(&mut t, &registry).unwrap();
            t
        };
        text.lines()
            .find(|l| {
                l.starts_with(r#"ticket_store_replica_reads_total{shard="0",result="final"}"#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        served_by_replica(),
        0,
        "while paused, the replica answered nothing"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while served_by_replica() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica never answered"
        );
        let seen = store.purchase(id).await.unwrap().unwrap();
        assert_eq!(
            seen.status,
            PurchaseStatus::Confirmed,
            "never back to pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A primary given as a replica is refused.
    let err = PostgresStore::connect(&primary.url(), 2)
        .await
        .unwrap()
        .with_replica(&primary.url(), 0, ReplicaMetrics::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a standby"), "{err}");
    drop(standby);
    drop(primary);
}

#[tokio::test]
async fn replicas_are_refused_for_sqlite_and_beyond_one_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("tickets.db").display());
    let err = AnyStore::open_with_replicas(&[sqlite], &["postgres://127.0.0.1:1/x"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs a postgres"), "{err}");
    let err = AnyStore::open_with_replicas(
        &["postgres://127.0.0.1:1/a"],
        &["postgres://127.0.0.1:1/x", "postgres://127.0.0.1:1/y"],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("2 replica URLs for 1 database URLs"),
        "{err}"
    );
}
