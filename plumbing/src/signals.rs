//! The signals that ask a process to drain (SIGTERM, SIGINT) or to reload (SIGHUP).
//!
//! Handlers are installed when [`Signals::install`] returns, not when a task first polls them:
//! a signal that arrives right after a process says it is serving drains it instead of killing
//! it.

use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A signal the process acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain and exit.
    Terminate,
    /// SIGINT (Ctrl-C): drain and exit.
    Interrupt,
    /// SIGHUP: reload the configuration.
    Hangup,
}

impl Signal {
    /// Whether the signal asks the process to stop.
    pub fn is_stop(self) -> bool {
        matches!(self, Self::Terminate | Self::Interrupt)
    }

    /// Its name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
            Self::Hangup => "SIGHUP",
        }
    }
}

/// Installed handlers for SIGTERM, SIGINT and SIGHUP.
#[derive(Debug)]
pub struct Signals {
    term: UnixSignal,
    int: UnixSignal,
    hup: UnixSignal,
}

impl Signals {
    /// Installs the handlers. Needs a tokio runtime.
    ///
    /// # Errors
    /// When the runtime cannot register a handler.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Interrupt,
            _ = self.hup.recv() => Signal::Hangup,
        }
    }

    /// Waits for SIGTERM or SIGINT (SIGHUP is logged and otherwise ignored), then returns it.
    pub async fn stop_requested(&mut self) -> Signal {
        loop {
            let s = self.recv().await;
            if s.is_stop() {
                return s;
            }
            tracing::info!(
                signal = s.name(),
                "ignored: this process has nothing to reload"
            );
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, from a task of its own.
///
/// # Errors
/// When the handlers cannot be installed; nothing is spawned then.
pub fn cancel_on_stop_signal(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut signals = Signals::install()?;
    tokio::spawn(async move {
        tokio::select! {
            s = signals.stop_requested() => {
                tracing::info!(signal = s.name(), "draining");
                shutdown.cancel();
            }
            () = shutdown.cancelled() => {}
        }
    });
    Ok(())
}
