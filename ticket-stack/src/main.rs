//! `ticket-svc`: parses flags, installs tracing, resolves a config, runs one subcommand.
//!
//! Built with the `stack` feature (the default) it has every command; without it, only the
//! service's own `api` and `worker`, and links neither the balancer nor the crowd: the binary a
//! production deployment of the service runs (`--no-default-features`).
//!
//! Built with the stack, `ticket-svc balancer ARGS...` and `ticket-svc broker ARGS...` run the
//! balancer's and the broker's own programs, built in ([`balancer::cli`], [`broker::cli`]): one
//! binary is all `up --cluster` needs to start every process of the stack.
//!
//! Exit codes: 0 success (for `api` and `worker`: a clean drain after Ctrl-C or SIGTERM);
//! 1 runtime failure, printed as one line (port in use, store or broker unreachable; for `rush`
//! and `demo`, a broken invariant); 2 bad flags.

use std::net::SocketAddr;
use std::process::ExitCode;
#[cfg(feature = "stack")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "stack")]
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use plumbing::logging::LogFormat;
#[cfg(feature = "stack")]
use tokio_util::sync::CancellationToken;

#[cfg(feature = "stack")]
use ticket_stack::rush::{Codes, Mailbox, RushConfig, Target};
use ticket_stack::service::{self, ServiceDeps};
#[cfg(feature = "stack")]
use ticket_svc::domain::EventId;
use ticket_svc::worker::{
    DEFAULT_LINGER_MS, DEFAULT_STORE_PATIENCE_S, MAX_BATCH_JOBS, MAX_STORE_PATIENCE_S, WorkerConfig,
};

/// `worker --linger-ms`: 0 (off) to 1 s.
fn linger_ms_range() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=1000)
}

/// `worker --store-patience-s`: 0 (nack at the first failure) to the most that keeps a batch
/// within its lease.
fn store_patience_range() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=MAX_STORE_PATIENCE_S)
}

/// mimalloc instead of glibc malloc: a rush spent ~12% of the stack's CPU in glibc's allocator
/// (many threads, many short-lived buffers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process. mimalloc asks for them on its arenas, and then
/// hands back 64 KiB pieces of a huge page as the load moves between threads; every time it
/// needs one again the kernel zeroes a whole 2 MiB page. Under a rush that zeroing was 2.5% of
/// the machine's CPU and a 2 MiB clear stalls the thread that faulted (`perf record` of `up`).
/// With it off, the demo's slowest accepts got faster (median max 33 vs 53 ms, p99.9 21 vs 23
/// ms; docs/PERFORMANCE.md). A kernel without the prctl just keeps the default.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "transparent huge pages stay as the kernel has them");
    }
}

#[cfg(feature = "stack")]
const ABOUT: &str = "ticketrush: the ticket API, workers, stack runner and buyer crowd";
#[cfg(not(feature = "stack"))]
const ABOUT: &str = "ticketrush: the ticket API and workers (built without up, demo and rush)";

#[derive(Debug, Parser)]
#[command(
    name = "ticket-svc",
    version,
    about = ABOUT
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        global = true,
        env = "TICKET_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Hold each runtime worker thread to a CPU of its own. `auto`: for `up` and `demo` (the
    /// whole stack in one process, which then has the machine to itself), not for the other
    /// commands, which may share a machine. Other threads are never pinned.
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        global = true,
        env = "TICKET_PIN_WORKERS"
    )]
    pin_workers: PinWorkers,
    #[command(subcommand)]
    command: Command,
}

/// `--pin-workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PinWorkers {
    Auto,
    On,
    Off,
}

/// `demo --pace`: the waiting room's pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pace {
    Fixed,
    Auto,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The HTTP API: validate, enqueue durably, answer 202.
    Api {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Serve `/metrics` here, for the operators' network (the public listener does not).
        /// None: no metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        deps: ServiceDeps,
        #[command(flatten)]
        access: ticket_stack::access_args::AccessArgs,
    },
    /// A purchase worker: decide queued purchases in batches.
    Worker {
        #[command(flatten)]
        deps: ServiceDeps,
        /// Worker loops in this process.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// The most jobs decided in one transaction.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// After a batch smaller than --batch, wait this long before fetching again, so the next
        /// batch is bigger (one commit and one ack for more purchases). A purchase on a quiet
        /// queue never waits for it. 0 turns it off.
        #[arg(long, default_value_t = DEFAULT_LINGER_MS, value_parser = linger_ms_range())]
        linger_ms: u64,
        /// While the database fails transiently (busy, restarting, unreachable), retry a batch in
        /// place this long before giving it back to the broker, which spends one of each job's 5
        /// delivery attempts (after the 5th the job is dead-lettered and its purchase reads
        /// `failed`). Raise it to ride out a longer failover; 0 gives batches back at the first
        /// failure. At most 15, so a batch (plus a 10 s store call) stays within its 30 s lease.
        #[arg(long, default_value_t = DEFAULT_STORE_PATIENCE_S, value_parser = store_patience_range())]
        store_patience_s: u64,
        /// Serve `/metrics` here (loopback by default: pass e.g. 127.0.0.1:9091).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// The whole stack on loopback until Ctrl-C.
    #[cfg(feature = "stack")]
    Up {
        /// Where data lives.
        #[arg(long, default_value = "data")]
        data_dir: String,
        /// API instances.
        #[arg(long, default_value_t = 3)]
        apis: usize,
        /// Workers at the start and at least.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Workers at most: one more is started while more than --scale-up-lag purchases stay
        /// queued for 3 s, one stopped while 5% of that or fewer are. Never more than the
        /// partitions with purchases queued: an event's purchases are decided in order, by one
        /// worker at a time.
        #[arg(long, default_value_t = 8)]
        max_workers: usize,
        /// Queued purchases above which a worker is added.
        #[arg(long, default_value_t = 1000)]
        scale_up_lag: u64,
        /// The balancer's public address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// The balancer's admin address (status page, metrics, backends API); keep it on loopback.
        /// With --cluster, balancer k (from 0) takes this port + k, as with --listen.
        #[arg(long, default_value = "127.0.0.1:9080")]
        admin_listen: String,
        /// Where the APIs send login codes, as `api --login-sender`: `log`, or an http:// URL
        /// (e.g. a crowd's `rush --mailbox-listen` address, /codes).
        #[arg(long, default_value = "log", env = "TICKET_LOGIN_SENDER")]
        login_sender: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// `up`, one event, a rush through the balancer, a report, the invariants checked.
    #[cfg(feature = "stack")]
    Demo {
        /// Buyers in the rush.
        #[arg(long, default_value_t = 100_000)]
        buyers: u64,
        /// Tickets for sale.
        #[arg(long, default_value_t = 10_000)]
        tickets: u32,
        /// Buyers in flight at once (each on its own keep-alive connection), 1..=4096.
        #[arg(long, default_value_t = 64, value_parser = parse_concurrency)]
        concurrency: usize,
        /// Where data lives (a fresh temp dir by default).
        #[arg(long)]
        data_dir: Option<String>,
        /// Where to write the HTML report (summary and charts, one self-contained file).
        #[arg(long, default_value = "demo-report.html")]
        report: std::path::PathBuf,
        /// The event's waiting room admits this many buyers a second, from an opening a moment
        /// after the buyers logged in (they join its line meanwhile); 0: no waiting room, the
        /// buyers rush the sale directly.
        #[arg(long, default_value_t = 20_000)]
        admit_per_s: u32,
        /// How the waiting room's rate moves: `fixed` at --admit-per-s, or `auto`: from
        /// --admit-per-s, faster while the workers keep up and slower when they fall behind.
        #[arg(long, value_enum, default_value = "fixed")]
        pace: Pace,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// A crowd of buyers against any deployment.
    #[cfg(feature = "stack")]
    Rush {
        /// Base URL, e.g. http://127.0.0.1:8080. Give it once per address of the site (e.g. each
        /// balancer): the crowd spreads its connections over them, and sends a failed request
        /// again on the next one.
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// The event to buy.
        #[arg(long)]
        event: i64,
        /// How many buyers.
        #[arg(long)]
        buyers: u64,
        /// Buyers in flight at once, 1..=4096.
        #[arg(long, default_value_t = 64, value_parser = parse_concurrency)]
        concurrency: usize,
        /// Buyers per second (open model, latency from the intended send time).
        #[arg(long)]
        rate: Option<f64>,
        /// Poll every purchase to a final state and check the invariants.
        #[arg(long)]
        verify: bool,
        /// Seed for the buyers' choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Deadline per request, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// The longest --verify waits for purchases to be decided, in seconds.
        #[arg(long, default_value_t = 60)]
        verify_timeout_s: u64,
        /// Also write the report as a self-contained HTML file with charts.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// Times a request is sent again, on the next target, after no answer or a 502, 503 or
        /// 504 (50 ms pause, doubling up to 1 s). Purchases carry an Idempotency-Key, so a
        /// purchase sent again is sold once. 0 sends each request once.
        #[arg(long, default_value_t = RushConfig::DEFAULT_RESENDS, value_parser = clap::value_parser!(u32).range(0..=20))]
        resends: u32,
        /// Fail (exit 1) when a request still failed after its re-sends: for runs where
        /// processes are killed on purpose and buyers must never see it.
        #[arg(long)]
        require_answers: bool,
        /// Where the crowd receives its buyers' login codes: start every API with
        /// `--login-sender http://THIS_ADDRESS/codes`. Each buyer logs in (POST /login, the
        /// code, POST /sessions) before the rush.
        #[arg(long, required_unless_present = "mailbox", conflicts_with = "mailbox")]
        mailbox_listen: Option<SocketAddr>,
        /// Or read the codes from a mailbox that runs apart (`ticket-svc mailbox`, which several
        /// crowds may share), e.g. http://127.0.0.1:7999.
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// A mailbox for login codes, as a test mail server: the APIs' webhook login sender delivers
    /// codes to it (`api --login-sender http://ADDR/codes`) and crowds read them
    /// (`rush --mailbox http://ADDR`). For load tests and rehearsals, never production.
    #[cfg(feature = "stack")]
    Mailbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7999")]
        listen: SocketAddr,
    },
}

/// `up --cluster` and `demo --cluster`: the stack as separate processes.
#[cfg(feature = "stack")]
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Run the stack as separate, supervised processes (this binary, started once per balancer,
    /// API, broker node and worker), on PostgreSQL: any one may be killed without stopping the
    /// sale. Without it, everything runs in this process on SQLite.
    #[arg(long)]
    cluster: bool,
    /// With --cluster: the store every process shares, a postgres:// URL; given several times
    /// (or comma-separated in TICKET_DB), PostgreSQL sharded by event, as for `api` and
    /// `worker`. Prefer the env var for a URL with a password: it stays out of `ps`.
    #[arg(long, env = "TICKET_DB", hide_env_values = true)]
    db: Vec<String>,
    /// With --cluster: a hot standby of a --db database for the APIs' reads of decided
    /// purchases, as `api --db-replica` (the i-th for the i-th --db).
    #[arg(long, env = "TICKET_DB_REPLICA", hide_env_values = true)]
    db_replica: Vec<String>,
    /// With --cluster: balancers (buyers may use any; each fronts every API).
    #[arg(long, default_value_t = 2)]
    balancers: usize,
    /// With --cluster: broker nodes, 1 or a replicated cluster of 3 or 5.
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// With --cluster: API processes at most (default: --apis, no autoscaling). Above --apis,
    /// one more is started while more than --api-busy requests per API stay in flight or
    /// queued at the balancers for 3 s, and removed (drained through every balancer first)
    /// while an eighth of that or fewer do.
    #[arg(long)]
    max_apis: Option<usize>,
    /// With --cluster: requests in flight or queued per API, over every balancer, above which
    /// an API is added.
    #[arg(long, default_value_t = 32)]
    api_busy: u64,
    /// With --cluster: the runner's own page of every process (`/status`: up or down,
    /// restarts, exits, address, log) and its `/metrics`; keep it on loopback. `demo` picks a
    /// free port.
    #[arg(long, default_value = "127.0.0.1:9079")]
    status_listen: SocketAddr,
    /// With --cluster: SIGKILL one random process this often (e.g. 5s) and start it again after
    /// --chaos-down. `demo` then requires every buyer's request to be answered (the crowd sends
    /// a failed one again on another balancer) and draws each kill on its charts.
    #[arg(long, value_parser = broker::config::parse_duration, requires = "cluster")]
    chaos_every: Option<Duration>,
    /// How long a process killed by chaos stays down; shorter than --chaos-every.
    #[arg(long, default_value = "1s", value_parser = broker::config::parse_duration)]
    chaos_down: Duration,
    /// Picks chaos's victims.
    #[arg(long, default_value_t = 1)]
    chaos_seed: u64,
}

#[cfg(feature = "stack")]
impl ClusterArgs {
    /// The cluster's settings over `data_dir` with `apis` API processes at the start (`None`:
    /// the default), this binary running every process.
    fn config(
        &self,
        data_dir: &std::path::Path,
        apis: Option<usize>,
    ) -> anyhow::Result<ticket_stack::cluster::ClusterConfig> {
        let db: Vec<String> = self
            .db
            .iter()
            .flat_map(|v| ticket_svc::store::split_db_urls(v))
            .collect();
        anyhow::ensure!(
            !db.is_empty(),
            "--cluster needs --db postgres://... (or TICKET_DB): its processes share one database"
        );
        let program =
            std::env::current_exe().context("finding this binary to run its processes")?;
        let mut config = ticket_stack::cluster::ClusterConfig::new(program, data_dir, &db);
        config.db_replicas = self
            .db_replica
            .iter()
            .flat_map(|v| ticket_svc::store::split_db_urls(v))
            .collect();
        config.balancers = self.balancers;
        config.brokers = self.brokers;
        config.apis = apis.unwrap_or(config.apis);
        config.max_apis = self.max_apis.unwrap_or(config.apis);
        config.api_busy = self.api_busy;
        config.status_listen = Some(self.status_listen);
        Ok(config)
    }

    /// Chaos's settings, if asked for.
    fn chaos(&self) -> anyhow::Result<Option<ticket_stack::cluster::chaos::ChaosConfig>> {
        let Some(every) = self.chaos_every else {
            return Ok(None);
        };
        let chaos = ticket_stack::cluster::chaos::ChaosConfig {
            every,
            down: self.chaos_down,
            seed: self.chaos_seed,
        };
        chaos.validate()?;
        Ok(Some(chaos))
    }
}

#[cfg(feature = "stack")]
/// `--concurrency`: checked with the flags, so a bad value never starts anything.
fn parse_concurrency(s: &str) -> Result<usize, String> {
    let max = RushConfig::MAX_CONCURRENCY;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of buyers from 1 to {max}")),
    }
}

impl Command {
    /// Whether the command runs the whole stack in this process, which then has the machine to
    /// itself (`--pin-workers auto` pins its runtime workers).
    fn has_the_machine(&self) -> bool {
        #[cfg(feature = "stack")]
        if let Self::Up { cluster, .. } | Self::Demo { cluster, .. } = self {
            return !cluster.cluster;
        }
        false
    }
}

#[cfg(feature = "stack")]
async fn rush(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Rush {
        targets,
        event,
        buyers,
        concurrency,
        rate,
        verify,
        seed,
        timeout_ms,
        verify_timeout_s,
        report: report_path,
        resends,
        require_answers,
        mailbox_listen,
        mailbox,
    } = cmd
    else {
        anyhow::bail!("not a rush");
    };
    let (codes, own_mailbox) = match (mailbox_listen, mailbox) {
        (Some(addr), _) => {
            let m = Arc::new(
                Mailbox::bind(addr)
                    .await
                    .with_context(|| format!("the mailbox cannot listen on {addr}"))?,
            );
            (Codes::Local(Arc::clone(&m)), Some(m))
        }
        (None, Some(url)) => (Codes::Remote(Target::resolve(&url).await?), None),
        (None, None) => anyhow::bail!("rush needs --mailbox-listen or --mailbox"),
    };
    let config = RushConfig {
        targets: Target::resolve_all(&targets).await?,
        event: EventId(event),
        buyers,
        concurrency,
        rate,
        verify,
        seed,
        request_timeout: Duration::from_millis(timeout_ms),
        verify_timeout: Duration::from_secs(verify_timeout_s),
        show_progress: true,
        resends,
        require_answers,
    };
    let shutdown = CancellationToken::new();
    service::cancel_on_signal(shutdown.clone())?;
    let report = ticket_stack::rush::run(config, codes, shutdown).await;
    if let Some(m) = own_mailbox {
        m.stop().await;
    }
    let report = report.context("rush")?;
    print!("{report}");
    if let Some(path) = report_path {
        write_report(&path, &report).await?;
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(feature = "stack")]
/// `ticket-svc mailbox`: serves login codes until SIGTERM or SIGINT.
async fn mailbox(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let m = Mailbox::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let shutdown = CancellationToken::new();
    service::cancel_on_signal(shutdown.clone())?;
    println!(
        "mailbox on http://{}: start the APIs with --login-sender {}",
        m.addr(),
        m.url()
    );
    shutdown.cancelled().await;
    m.stop().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "stack")]
/// Writes the HTML report and says where.
async fn write_report(
    path: &std::path::Path,
    report: &ticket_stack::rush::RushReport,
) -> anyhow::Result<()> {
    tokio::fs::write(path, ticket_stack::rush::html::render(report))
        .await
        .with_context(|| format!("writing the report to {}", path.display()))?;
    println!("report: {}", path.display());
    Ok(())
}

#[cfg(feature = "stack")]
/// `up` and `demo`: the whole stack in this process.
async fn stack_command(cmd: Command) -> anyhow::Result<ExitCode> {
    use ticket_stack::stack::{self, StackConfig};
    match cmd {
        Command::Up {
            data_dir,
            apis,
            workers,
            max_workers,
            scale_up_lag,
            listen,
            admin_listen,
            login_sender,
            cluster,
        } => {
            let listen: SocketAddr = listen.parse().with_context(|| {
                format!("--listen {listen:?} is not an address like 127.0.0.1:8080")
            })?;
            let admin_listen: SocketAddr = admin_listen.parse().with_context(|| {
                format!("--admin-listen {admin_listen:?} is not an address like 127.0.0.1:9080")
            })?;
            if cluster.cluster {
                let mut config = cluster.config(std::path::Path::new(&data_dir), Some(apis))?;
                config.workers = workers;
                config.max_workers = max_workers.max(workers);
                config.scale_up_lag = scale_up_lag;
                config.listen = listen;
                config.admin_listen = admin_listen;
                config.login_sender = login_sender;
                return up_cluster(config, cluster.chaos()?).await;
            }
            let mut config = StackConfig::new(&data_dir);
            config.apis = apis;
            config.workers = workers;
            config.max_workers = max_workers.max(workers);
            config.scale_up_lag = scale_up_lag;
            config.listen = listen;
            config.admin_listen = admin_listen;
            config.login_sender = login_sender;
            let s = stack::start(config).await.context("starting the stack")?;
            ticket_stack::demo::print_addresses(&s);
            println!("data in {data_dir}; Ctrl-C to stop");
            let shutdown = CancellationToken::new();
            service::cancel_on_signal(shutdown.clone())?;
            shutdown.cancelled().await;
            eprintln!("ticket-svc: draining");
            s.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            buyers,
            tickets,
            concurrency,
            data_dir,
            report: report_path,
            admit_per_s,
            pace,
            cluster,
        } => {
            let temp = tempfile::tempdir().context("making a temp dir")?;
            let dir = data_dir.map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
            let loopback0: SocketAddr = ([127, 0, 0, 1], 0).into();
            let sale = ticket_stack::demo::Sale {
                tickets,
                buyers,
                concurrency,
                admit_per_s: (admit_per_s > 0).then_some(admit_per_s),
                auto_pace: pace == Pace::Auto,
            };
            let shutdown = CancellationToken::new();
            service::cancel_on_signal(shutdown.clone())?;
            let report = if cluster.cluster {
                let mut config = cluster.config(&dir, None)?;
                config.listen = loopback0;
                config.admin_listen = loopback0;
                config.status_listen = Some(loopback0);
                ticket_stack::demo::on_cluster(config, cluster.chaos()?, sale, shutdown).await?
            } else {
                ticket_stack::demo::in_process(dir, sale, shutdown).await?
            };
            print!("{report}");
            println!("{}", ticket_stack::demo::sold_line(&report));
            write_report(&report_path, &report).await?;
            Ok(if report.is_ok() {
                println!("demo: every invariant held");
                ExitCode::SUCCESS
            } else {
                println!("demo: an invariant was broken (see above)");
                ExitCode::FAILURE
            })
        }
        _ => anyhow::bail!("not a stack command"),
    }
}

#[cfg(feature = "stack")]
/// `up --cluster`: the cluster until Ctrl-C (killing a process every so often, with chaos).
async fn up_cluster(
    config: ticket_stack::cluster::ClusterConfig,
    chaos: Option<ticket_stack::cluster::chaos::ChaosConfig>,
) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    service::cancel_on_signal(shutdown.clone())?;
    let data_dir = config.data_dir.display().to_string();
    let c = ticket_stack::cluster::start(config)
        .await
        .context("starting the cluster")?;
    print!("{}", c.addresses);
    println!(
        "  organizer token:      in {}",
        c.credentials.organizer_token_file.display()
    );
    println!(
        "data in {data_dir}, each process's output in {}; Ctrl-C to stop",
        c.logs.display()
    );
    match chaos {
        Some(chaos) => {
            println!(
                "chaos: a process killed every {:?}, back after {:?}",
                chaos.every, chaos.down
            );
            let kills = c.chaos(chaos, shutdown.clone()).await;
            println!("chaos: {} processes killed", kills.len());
        }
        None => shutdown.cancelled().await,
    }
    eprintln!("ticket-svc: draining");
    c.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// `ticket-svc balancer ...` and `ticket-svc broker ...`: the built-in program named by the first
/// argument, with the rest of the arguments, if it is one of them.
#[cfg(feature = "stack")]
fn run_built_in() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1).peekable();
    let name = args.peek()?.to_str()?.to_owned();
    match name.as_str() {
        "balancer" => Some(balancer::cli::main(args)),
        "broker" => Some(broker::cli::main(args)),
        _ => None,
    }
}

/// A process `up --cluster` started (it sets [`SUPERVISOR_PID`] to its own pid) asks for SIGTERM
/// when that supervisor dies, even by SIGKILL: a runner gone must not leave its cluster
/// running. If the supervisor died before the request took, the process stops at once.
#[cfg(target_os = "linux")]
fn end_with_the_supervisor() -> Result<(), ExitCode> {
    let Some(supervisor) = std::env::var(ticket_stack::SUPERVISOR_PID)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return Ok(());
    };
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
    {
        eprintln!("ticket-svc: cannot follow the supervisor's exit: {e}");
    }
    match rustix::process::getppid() {
        Some(parent) if parent.as_raw_nonzero().get() == supervisor => Ok(()),
        _ => {
            eprintln!("ticket-svc: the supervisor that started this process is gone");
            Err(ExitCode::FAILURE)
        }
    }
}

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    if let Err(code) = end_with_the_supervisor() {
        return code;
    }
    #[cfg(feature = "stack")]
    if let Some(code) = run_built_in() {
        return code;
    }
    let cli = Cli::parse();
    plumbing::logging::init(cli.log_format);
    disable_transparent_huge_pages();
    let run = cli.command;
    let pin = match cli.pin_workers {
        PinWorkers::On => true,
        PinWorkers::Off => false,
        PinWorkers::Auto => run.has_the_machine(),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The broker that `up` and `demo` embed writes and syncs produces when a worker runs out of
    // work; in `api` and `worker` the hook finds nothing to do.
    builder.enable_all().on_thread_park(broker::sync_on_park);
    if pin {
        match ticket_stack::affinity::pin_workers(&mut builder, broker::sync_on_park) {
            Some(cpus) => tracing::info!(?cpus, "runtime workers pinned, one per CPU"),
            None => tracing::info!(
                "runtime workers not pinned: fewer than 2 CPUs allowed, or no CPU affinity here"
            ),
        }
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ticket-svc: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match run {
            Command::Api {
                listen,
                metrics_listen,
                deps,
                access,
            } => service::api(listen, metrics_listen, deps, access).await,
            Command::Worker {
                deps,
                workers,
                batch,
                linger_ms,
                store_patience_s,
                metrics_listen,
            } => {
                let config = WorkerConfig {
                    batch_max_jobs: batch.clamp(1, MAX_BATCH_JOBS),
                    linger: Duration::from_millis(linger_ms),
                    store_patience: Duration::from_secs(store_patience_s),
                    ..WorkerConfig::default()
                };
                service::worker(deps, workers, config, metrics_listen).await
            }
            #[cfg(feature = "stack")]
            cmd @ (Command::Up { .. } | Command::Demo { .. }) => stack_command(cmd).await,
            #[cfg(feature = "stack")]
            cmd @ Command::Rush { .. } => rush(cmd).await,
            #[cfg(feature = "stack")]
            Command::Mailbox { listen } => mailbox(listen).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ticket-svc: {e:#}");
            ExitCode::FAILURE
        }
    }
}
