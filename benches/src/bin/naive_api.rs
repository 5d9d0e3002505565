//! `naive_api`: the ticket API without a queue, for the stack comparison (`benches/run.sh stack`).
//!
//! ```text
//! naive_api --listen 127.0.0.1:8081 --db sqlite://DIR/tickets.db --signing-key ID:SECRET \
//!           [--organizer-token T] [--login-sender log|URL]
//! ```
//! The same routes and JSON as `ticket-svc api`, served by the same router, but a purchase is
//! decided in its own database transaction before the 202 (see `benches::naive`). Run several
//! behind a balancer, sharing one database, to compare with the queue-based stack. SIGTERM or
//! Ctrl-C drains and stops it (exit 0).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use benches::naive::NaiveQueue;
use clap::Parser;
use ticket_svc::http::{ApiConfig, ApiListeners, FrontDoor, ServeConfig, run_api};
use ticket_svc::line::MemoryLineLog;
use ticket_svc::store::AnyStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(about = "The ticket API deciding each purchase in its own transaction (no queue)")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// sqlite://PATH or postgres://...
    #[arg(long, env = "TICKET_DB", hide_env_values = true)]
    db: String,
    #[command(flatten)]
    access: ticket_stack::access_args::AccessArgs,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let access = cli.access.gatekeeper()?;
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let store = Arc::new(
        AnyStore::open(&cli.db)
            .await
            .with_context(|| format!("cannot open the store {}", cli.db))?,
    );
    let queue = Arc::new(NaiveQueue::new(Arc::clone(&store)));
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        token.cancel();
    });
    tracing::info!(listen = %listener.local_addr()?, "naive api serving");
    run_api(
        ApiListeners {
            public: listener,
            metrics: None,
        },
        store,
        queue,
        // Waiting rooms are not compared here: each process's line would be its own.
        FrontDoor {
            access,
            line_log: Arc::new(MemoryLineLog::new()),
        },
        ApiConfig::default(),
        ServeConfig::default(),
        shutdown,
    )
    .await
    .context("naive api")?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("naive_api: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("naive_api: {e:#}");
            ExitCode::FAILURE
        }
    }
}
