//! `ticket-svc demo`: the whole stack (in this process, or as a cluster of processes), the
//! crowd's mailbox wired in as the APIs' login sender, one event created by the organizer
//! through the balancer, and a verified rush whose buyers log in first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cluster::chaos::ChaosConfig;
use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::credentials::StackCredentials;
use crate::rush::{
    self, Codes, Kill, Mailbox, NewEvent, RushConfig, RushError, RushReport, Target,
};
use crate::stack::{self, StackConfig, StackError};
use ticket_svc::domain::{EventId, UnixMillis};

/// The sale the demo runs.
#[derive(Debug, Clone, Copy)]
pub struct Sale {
    /// Tickets for sale.
    pub tickets: u32,
    /// Buyers in the crowd.
    pub buyers: u64,
    /// Buyers in flight at once.
    pub concurrency: usize,
    /// The waiting room's pace (none: the event has no waiting room).
    pub admit_per_s: Option<u32>,
    /// The room's rate follows the workers from `admit_per_s` on.
    pub auto_pace: bool,
}

/// How long the demo gives its logged-in buyers to join the line before the sale opens: a
/// moment, plus a second for every ten thousand buyers (joins run at several times that here).
fn join_lead(buyers: u64) -> std::time::Duration {
    std::time::Duration::from_millis(2_000 + buyers / 10)
}

/// The most tickets one buyer may hold in the demo's event.
pub const MAX_PER_BUYER: u32 = 4;

/// Why the demo could not run to its report.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The stack did not start.
    #[error("starting the stack: {0}")]
    Stack(#[from] StackError),
    /// The cluster did not start.
    #[error("starting the cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// The crowd could not run.
    #[error("rush: {0}")]
    Rush(#[from] RushError),
}

/// Runs the demo on the stack in this process, over `data_dir`.
///
/// # Errors
/// The stack or the crowd could not run (a broken invariant is in the report, not an error).
pub async fn in_process(
    data_dir: PathBuf,
    sale: Sale,
    shutdown: CancellationToken,
) -> Result<RushReport, DemoError> {
    let mailbox = open_mailbox().await?;
    let loopback0: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut config = StackConfig::new(data_dir);
    config.listen = loopback0;
    config.admin_listen = loopback0;
    config.login_sender = mailbox.url();
    let outcome = match stack::start(config).await {
        Ok(s) => {
            print_addresses(&s);
            let outcome = match Target::resolve(&format!("http://{}", s.public)).await {
                Ok(target) => {
                    sell(
                        vec![target],
                        &s.credentials,
                        &mailbox,
                        sale,
                        false,
                        shutdown,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            // Stop the stack whatever the rush did: its tasks must be done with the data dir
            // before a temp dir goes away.
            s.stop().await;
            outcome.map_err(DemoError::from)
        }
        Err(e) => Err(e.into()),
    };
    mailbox.stop().await;
    outcome
}

/// Runs the demo on a cluster of processes, killing one every so often with `chaos` (then
/// every buyer's request must be answered).
///
/// # Errors
/// The cluster or the crowd could not run.
pub async fn on_cluster(
    mut config: ClusterConfig,
    chaos: Option<ChaosConfig>,
    sale: Sale,
    shutdown: CancellationToken,
) -> Result<RushReport, DemoError> {
    let mailbox = open_mailbox().await?;
    config.login_sender = mailbox.url();
    let outcome = match crate::cluster::start(config).await {
        Ok(c) => {
            print!("{}", c.addresses);
            let outcome = cluster_rush(&c, &mailbox, sale, chaos, shutdown).await;
            c.stop().await;
            outcome.map_err(DemoError::from)
        }
        Err(e) => Err(e.into()),
    };
    mailbox.stop().await;
    outcome
}

async fn open_mailbox() -> Result<Arc<Mailbox>, RushError> {
    Mailbox::bind(([127, 0, 0, 1], 0).into())
        .await
        .map(Arc::new)
        .map_err(RushError::Mailbox)
}

/// The rush over every balancer, with chaos killing processes meanwhile if asked, the kills put
/// on the report.
async fn cluster_rush(
    c: &Cluster,
    mailbox: &Arc<Mailbox>,
    sale: Sale,
    chaos: Option<ChaosConfig>,
    shutdown: CancellationToken,
) -> Result<RushReport, RushError> {
    let targets = Target::resolve_all(&c.addresses.public_urls()).await?;
    let stop_chaos = CancellationToken::new();
    let chaos_run = async {
        match chaos {
            Some(chaos) => c.chaos(chaos, stop_chaos.clone()).await,
            None => Vec::new(),
        }
    };
    let rush_run = async {
        let report = sell(
            targets,
            &c.credentials,
            mailbox,
            sale,
            chaos.is_some(),
            shutdown,
        )
        .await;
        stop_chaos.cancel();
        report
    };
    let (report, kills) = tokio::join!(rush_run, chaos_run);
    let mut report = report?;
    report.kills = kills
        .into_iter()
        .map(|k| Kill {
            at: k.at.saturating_duration_since(report.started),
            process: k.process,
        })
        .collect();
    Ok(report)
}

/// The event, created by the organizer through `targets`, and the verified rush on it.
async fn sell(
    targets: Vec<Target>,
    credentials: &StackCredentials,
    mailbox: &Arc<Mailbox>,
    sale: Sale,
    require_answers: bool,
    shutdown: CancellationToken,
) -> Result<RushReport, RushError> {
    // The buyers log in first, as people do before an on-sale; then the sale is announced, to
    // open once they had time to join its line.
    let mut config = RushConfig::verified(targets, EventId(0), sale.buyers, sale.concurrency);
    config.require_answers = require_answers;
    println!("{} buyers log in", sale.buyers);
    let logins =
        rush::login::log_in_all(&config, &Codes::from(Arc::clone(mailbox)), &shutdown).await;
    let mut event = NewEvent::new("DJ night", sale.tickets, MAX_PER_BUYER);
    if let Some(per_s) = sale.admit_per_s {
        let lead = i64::try_from(join_lead(sale.buyers).as_millis()).unwrap_or(i64::MAX);
        event.opens_at = Some(UnixMillis(UnixMillis::now().0.saturating_add(lead)));
        event.admit_per_s = Some(per_s);
        event.auto_pace = sale.auto_pace;
    }
    config.event = rush::create_event(
        &config.targets,
        &credentials.organizer_authorization(),
        &event,
    )
    .await?;
    match sale.admit_per_s {
        Some(per_s) => println!(
            "event {}: {} tickets, at most {MAX_PER_BUYER} per buyer, on sale in {:.1} s behind a waiting room admitting {per_s}/s{}; the buyers join its line",
            config.event,
            sale.tickets,
            join_lead(sale.buyers).as_secs_f64(),
            if sale.auto_pace {
                " at first, then at the workers' pace"
            } else {
                ""
            }
        ),
        None => println!(
            "event {}: {} tickets, at most {MAX_PER_BUYER} per buyer; the buyers rush the balancer",
            config.event, sale.tickets
        ),
    }
    rush::run_logged_in(config, logins, shutdown).await
}

/// Prints where the stack in this process listens, as `up` and `demo` show it.
pub fn print_addresses(s: &stack::Stack) {
    println!("ticketrush is up");
    println!("  buyers (balancer):  http://{}", s.public);
    if let Some(admin) = s.admin {
        println!("  status page:        http://{admin}/status");
        println!("  balancer metrics:   http://{admin}/metrics");
    }
    println!("  broker:             {}", s.broker);
    if let Some(m) = s.broker_metrics {
        println!("  broker metrics:     http://{m}/metrics");
    }
    for (i, a) in s.api_metrics.iter().enumerate() {
        println!("  api {i} metrics:      http://{a}/metrics");
    }
    if let Some(m) = s.worker_metrics {
        println!("  worker metrics:     http://{m}/metrics");
    }
    println!(
        "  organizer token:    in {}",
        s.credentials.organizer_token_file.display()
    );
}

/// The line that says how the sale ended: the event's tickets sold, as last read through the
/// API.
pub fn sold_line(report: &RushReport) -> String {
    let sold = report.sold.last().map_or(0, |s| s.sold);
    format!(
        "event {}: sold {sold} of {} tickets",
        report.event, report.tickets
    )
}
