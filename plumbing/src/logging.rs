//! Log output: structured `tracing` events on stderr, as text or one JSON object per line,
//! filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's subscriber: `format` on stderr, filtered by `RUST_LOG`.
///
/// Call once, from `main`; libraries never install one. A second call (or another subscriber
/// already set) is ignored.
pub fn init(format: LogFormat) {
    init_quieting(format, |_| false);
}

/// [`init`], also dropping every event `quiet` picks: a dependency's line the binary says
/// better itself (it logs the same fact once, not on every retry).
pub fn init_quieting(format: LogFormat, quiet: fn(&Event<'_>) -> bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(Quiet(quiet)))
        .try_init();
}

/// Drops the events its function picks.
struct Quiet(fn(&Event<'_>) -> bool);

impl<S> Filter<S> for Quiet {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        !(self.0)(event)
    }
}

/// Whether one of `event`'s fields (its message included), as its `Debug` text, contains
/// `text`.
pub fn has_field_containing(event: &Event<'_>, text: &str) -> bool {
    struct Find<'a> {
        text: &'a str,
        found: bool,
    }
    impl Visit for Find<'_> {
        fn record_debug(&mut self, _: &Field, value: &dyn std::fmt::Debug) {
            if !self.found {
                self.found = format!("{value:?}").contains(self.text);
            }
        }
        fn record_str(&mut self, _: &Field, value: &str) {
            self.found |= value.contains(self.text);
        }
    }
    let mut find = Find { text, found: false };
    event.record(&mut find);
    find.found
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records, for each event that reaches it, its message and `has_field_containing`.
    struct Probe(Arc<Mutex<Vec<(String, bool)>>>);

    impl<S: tracing::Subscriber> Layer<S> for Probe {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let found = has_field_containing(event, "Unreachable node");
            let name = event.metadata().name().to_owned();
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((name, found));
        }
    }

    #[test]
    fn text_is_found_in_the_message_or_any_field_and_quiet_drops_what_it_picks() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let probe =
            Probe(Arc::clone(&seen)).with_filter(Quiet(|e| has_field_containing(e, "drop me")));
        let subscriber = tracing_subscriber::registry().with(probe);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(err = %"Unreachable node: 2", "RPCError");
            tracing::warn!("heartbeat error: Unreachable node: 3");
            tracing::warn!(error = ?std::io::Error::other("Unreachable node"), "failed");
            tracing::warn!(n = 3, "something else");
            tracing::warn!(why = "drop me", "dropped");
        });
        let found: Vec<bool> = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, f)| *f)
            .collect();
        assert_eq!(found, [true, true, true, false], "the fifth is dropped");
    }
}
