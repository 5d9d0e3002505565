//! The `balancer` command line: flags → config → [`crate::Balancer`]; signals → drain
//! (SIGTERM, SIGINT) or reload (SIGHUP). A library module so another binary can run the same
//! program (`ticket-svc balancer ...`, which the stack's cluster mode starts).

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::{Args, FileConfig};
use crate::{Balancer, Config};
use clap::Parser;
use plumbing::signals::{Signal, Signals};
use tokio_util::sync::CancellationToken;

/// Runs the balancer with `args` (the first is the program's name, as in `std::env::args_os`)
/// and says how it ended: 0 after a drain, 1 a runtime failure, 2 bad flags.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("balancer: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    plumbing::logging::init(args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("balancer: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let file = args.config.as_deref().map(FileConfig::load).transpose()?;
    Ok(Config::resolve(args, file.as_ref())?)
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    // One current-thread runtime per worker (docs/PERFORMANCE.md, "Balancer"): this thread is
    // worker 0.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let balancer = Balancer::bind(config)?;
        let handle = balancer.handle();
        let shutdown = CancellationToken::new();
        let mut run = std::pin::pin!(balancer.run(shutdown.clone()));
        let mut signals = Signals::install()?;
        loop {
            tokio::select! {
                r = &mut run => return Ok(r?),
                s = signals.recv() => match s {
                    Signal::Terminate | Signal::Interrupt => {
                        tracing::info!("{}: draining", s.name());
                        shutdown.cancel();
                    }
                    Signal::Hangup => {
                        tracing::info!("SIGHUP: reloading");
                        match load_config(&args) {
                            Ok(cfg) => {
                                if let Err(error) = handle.reload(cfg) {
                                    tracing::error!(%error, "reload refused");
                                }
                                if let Err(error) = handle.reload_tls() {
                                    tracing::error!(%error, "TLS reload failed; keeping the old certificate");
                                }
                            }
                            Err(error) => tracing::error!(%error, "reload failed; keeping the old config"),
                        }
                    }
                },
            }
        }
    })
}
