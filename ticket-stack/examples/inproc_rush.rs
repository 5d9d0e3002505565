//! A local benchmark of the API → store → worker path in ONE process, over the in-memory queue
//! (not durable, no broker, no balancer): what the API and the stores can do on this machine
//! without them. Not the `demo`.
//!
//! `cargo run --release -p ticket-stack --example inproc_rush -- [BUYERS] [TICKETS] [CONCURRENCY] [DB_URL|-] [memory|broker]`
//!
//! `broker` puts a real broker (in-process, temp dir, fsync always) behind the queue instead.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use ticket_stack::rush::{Mailbox, RushConfig, Target};
use ticket_svc::access::{Access, AccessConfig, KeyRing};
use ticket_svc::domain::EventSpec;
use ticket_svc::http::{ApiConfig, ApiState, FrontDoor, ServeConfig, router, serve};
use ticket_svc::line::MemoryLineLog;
use ticket_svc::metrics::Metrics;
use ticket_svc::queue::{
    BrokerQueue, BrokerQueueConfig, MemoryQueue, MemoryQueueConfig, PurchaseQueue,
};
use ticket_svc::store::{AnyStore, PostgresStore, Store};
use ticket_svc::worker::{Worker, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let buyers = arg(0, 20_000)?;
    let tickets = arg(1, 5_000)?;
    let concurrency = usize::try_from(arg(2, 64)?)?;
    let dir = tempfile::tempdir()?;
    let url = args
        .get(3)
        .filter(|u| u.as_str() != "-")
        .cloned()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("tickets.db").display()));
    // PostgreSQL: a schema of its own, dropped at the end, so the database is left as found.
    let schema = format!("tk_bench_{}", uuid::Uuid::new_v4().simple());
    let store = Arc::new(if url.starts_with("postgres") {
        AnyStore::Postgres(PostgresStore::connect_in_schema(&url, &schema, 16).await?)
    } else {
        AnyStore::open(&url).await?
    });
    let mode = args.get(4).map_or("memory", String::as_str);
    if mode == "broker" {
        let broker = broker::testing::TestBroker::start().await;
        let queue = Arc::new(
            BrokerQueue::connect(
                BrokerQueueConfig::new(broker.addr.to_string()),
                Duration::from_secs(5),
            )
            .await?,
        );
        return bench(store, queue, buyers, tickets, concurrency).await;
    }
    let queue = Arc::new(MemoryQueue::new(MemoryQueueConfig::default()));
    bench(store, queue, buyers, tickets, concurrency).await
}

async fn bench<Q: PurchaseQueue>(
    store: Arc<AnyStore>,
    queue: Arc<Q>,
    buyers: u64,
    tickets: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    // The crowd logs in through the API: its codes come to the crowd's mailbox.
    let mailbox = Arc::new(Mailbox::bind(([127, 0, 0, 1], 0).into()).await?);
    let access = AccessConfig::from_flags(
        &[KeyRing::generate_spec()?],
        &[],
        &mailbox.url(),
        AccessConfig::DEFAULT_SESSION_TTL,
    )?;
    let state = ApiState::new(
        Arc::clone(&store),
        Arc::clone(&queue),
        Arc::clone(&metrics),
        FrontDoor {
            access: Access::new(access),
            line_log: Arc::new(MemoryLineLog::new()),
        },
        ApiConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let api_stop = stop.clone();
    let api = tokio::spawn(serve(
        listener,
        router(state),
        ServeConfig::default(),
        api_stop,
    ));
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..2 {
        let w = Worker::new(
            Arc::clone(&store),
            Arc::clone(&queue),
            Arc::clone(&metrics),
            WorkerConfig::default(),
            format!("w{i}"),
        );
        let token = stop.clone();
        workers.spawn(async move { w.run(token).await });
    }
    let event = store
        .create_event(&EventSpec::new("DJ night", i64::try_from(tickets)?, 4)?)
        .await?;
    let target = Target::resolve(&format!("http://{addr}")).await?;
    let report = ticket_stack::rush::run(
        RushConfig::verified(vec![target], event.id, buyers, concurrency),
        Arc::clone(&mailbox),
        CancellationToken::new(),
    )
    .await?;
    mailbox.stop().await;
    print!("{report}");
    stop.cancel();
    while let Some(r) = workers.join_next().await {
        r?;
    }
    api.await??;
    if let AnyStore::Postgres(pg) = &*store {
        pg.drop_schema().await?;
    }
    Ok(())
}
