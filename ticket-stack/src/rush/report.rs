//! The rush's report: the numbers and a readable table (the HTML page is [`super::html`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::timeline::{SoldSample, Timeline};
use super::verify::Verification;
use super::waiting::LineSeen;
use ticket_svc::domain::EventId;

/// How far apart two API instances' clocks (and two requests in flight) may place a refusal
/// and a later place's admission before the crowd calls it out of order.
const LINE_CLOCK_SLACK: Duration = Duration::from_millis(250);

/// A process killed on purpose during the rush (chaos), drawn on the report's charts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// When, since the rush started.
    pub at: Duration,
    /// Which process, e.g. `api 2`.
    pub process: String,
}

impl fmt::Display for Kill {
    /// `api 2 at 5.0 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {:.1} s", self.process, self.at.as_secs_f64())
    }
}

/// What the crowd saw.
#[derive(Debug)]
pub struct RushReport {
    /// The target URLs.
    pub targets: Vec<String>,
    /// When the rush started (to place events such as [`Kill`]s on its timeline).
    pub started: tokio::time::Instant,
    /// The event.
    pub event: EventId,
    /// Buyers that ran.
    pub buyers: u64,
    /// Buyers who logged in (through the API, before the rush).
    pub logins: u64,
    /// Buyers whose login failed every try (they did not buy).
    pub login_failures: u64,
    /// How long the logins took.
    pub login_elapsed: Duration,
    /// What the crowd saw of the event's waiting room, if it has one.
    pub line: Option<LineSeen>,
    /// Requests sent.
    pub requests: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests with no HTTP answer (each attempt counted).
    pub transport_errors: u64,
    /// Attempts sent again after no answer or a 502, 503 or 504: failures the crowd absorbed.
    pub resent: u64,
    /// Requests whose last attempt still got no answer or a 502, 503 or 504: what buyers saw.
    pub failed: u64,
    /// Whether a failed request breaks the run (see `RushConfig::require_answers`).
    pub require_answers: bool,
    /// Processes killed during the rush, in order.
    pub kills: Vec<Kill>,
    /// Purchases answered 202 (distinct).
    pub accepted: u64,
    /// From the rush's start to its first purchase sent (behind a waiting room: the wait for
    /// the first admission).
    pub purchases_began: Duration,
    /// From the first purchase sent to the last answer.
    pub elapsed: Duration,
    /// Latency, microseconds.
    pub latency_us: Histogram<u64>,
    /// Bad requests that were not answered 400.
    pub bad_not_refused: u64,
    /// Retries that got another purchase id or position.
    pub retry_mismatches: u64,
    /// The invariant check, with `--verify`.
    pub verification: Option<Verification>,
    /// Tickets the event has.
    pub tickets: u32,
    /// With `--verify`: from the rush's last answer to the moment every accepted purchase had
    /// been seen final (an upper bound: it includes the time to poll them); `None` when some
    /// never were, or without `--verify`.
    pub decided_after: Option<Duration>,
    /// With `--verify`: from the rush's last answer to the moment the purchase last in line
    /// was seen final (probed every 20 ms while every purchase is polled). Workers decide an
    /// event's purchases in order of arrival, so this is the workers' lag behind the rush,
    /// without the polling cost `decided_after` includes.
    pub last_in_line_decided_after: Option<Duration>,
    /// Requests, answers and latencies second by second.
    pub timeline: Timeline,
    /// The event's `sold` count over time (through the rush and the verify phase).
    pub sold: Vec<SoldSample>,
}

impl RushReport {
    /// Accepted purchases per second.
    pub fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The waiting room in words, if the event has one.
    pub fn line_summary(&self) -> Option<String> {
        let line = self.line.as_ref()?;
        let proofs = if line.proofs > 0 {
            format!(" after {} proofs of work", line.proofs)
        } else {
            String::new()
        };
        Some(format!(
            "{} joined{proofs} ({} before the opening, drawn at it), {} admitted with a permit, {} looks at a place, {} permits asked a little early, {} failed",
            line.joined, line.pre_queue, line.admitted, line.polls, line.too_early, line.failed
        ))
    }

    /// The login phase in words: how many, how fast, how many failed.
    pub fn logins_summary(&self) -> String {
        format!(
            "{} in {:.2} s ({:.0}/s), {} failed",
            self.logins,
            self.login_elapsed.as_secs_f64(),
            self.logins as f64 / self.login_elapsed.as_secs_f64().max(1e-9),
            self.login_failures
        )
    }

    /// The problems found, in words (empty when everything checked held).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.bad_not_refused > 0 {
            problems.push(format!(
                "{} bad requests were not refused with 400",
                self.bad_not_refused
            ));
        }
        if self.retry_mismatches > 0 && self.verification.is_none() {
            problems.push(format!(
                "{} idempotent retries got another purchase",
                self.retry_mismatches
            ));
        }
        if self.login_failures > 0 {
            problems.push(format!(
                "{} buyers could not log in (POST /login, the code, POST /sessions)",
                self.login_failures
            ));
        }
        if let Some(line) = &self.line {
            if line.failed > 0 {
                problems.push(format!(
                    "{} buyers in the waiting room never got a permit (join, place or permit failed)",
                    line.failed
                ));
            }
            problems.extend(line.out_of_order(LINE_CLOCK_SLACK));
        }
        if self.require_answers && self.failed > 0 {
            problems.push(format!(
                "{} requests still failed after {} re-sends (no answer, or 502/503/504)",
                self.failed, self.resent
            ));
        }
        if let Some(v) = &self.verification {
            problems.extend(v.violations.iter().cloned());
        }
        problems
    }

    /// How long after the rush every purchase was seen final, in words (with `--verify`).
    pub fn decided_within(&self) -> Option<String> {
        let v = self.verification.as_ref()?;
        let last_in_line = self
            .last_in_line_decided_after
            .map(|d| {
                format!(
                    "; the last in line was final after {:.2} s",
                    d.as_secs_f64()
                )
            })
            .unwrap_or_default();
        Some(match self.decided_after {
            Some(d) => format!(
                "{:.2} s after the rush's last answer (an upper bound: includes polling {} purchases){last_in_line}",
                d.as_secs_f64(),
                v.confirmed + v.rejected.values().sum::<u64>()
            ),
            None => format!(
                "{} purchases still pending when verify gave up{last_in_line}",
                v.pending
            ),
        })
    }

    /// True when nothing that must hold was broken (bad requests refused, retries answered with
    /// the first purchase, with `require_answers` every request answered, and with `--verify`
    /// every invariant).
    pub fn is_ok(&self) -> bool {
        self.problems().is_empty()
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

impl fmt::Display for RushReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.latency_us;
        writeln!(
            f,
            "rush: {} buyers against {} event {} in {:.2} s",
            self.buyers,
            self.targets.join(", "),
            self.event,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "  logins      {}", self.logins_summary())?;
        if let Some(line) = self.line_summary() {
            writeln!(f, "  line        {line}")?;
        }
        writeln!(
            f,
            "  requests    {} sent, {} purchases accepted, {} transport errors",
            self.requests, self.accepted, self.transport_errors
        )?;
        writeln!(
            f,
            "  failures    {} absorbed by re-sending, {} seen by buyers",
            self.resent, self.failed
        )?;
        if !self.kills.is_empty() {
            let kills: Vec<String> = self.kills.iter().map(ToString::to_string).collect();
            writeln!(f, "  killed      {}", kills.join(", "))?;
        }
        writeln!(
            f,
            "  throughput  {:.0} accepted purchases/s",
            self.accepted_per_sec()
        )?;
        writeln!(
            f,
            "  latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        )?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        writeln!(f, "  statuses    {}", statuses.join("  "))?;
        if let Some(v) = &self.verification {
            let mut rejected: Vec<String> =
                v.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
            rejected.sort();
            writeln!(
                f,
                "  decided     confirmed {} ({} tickets), rejected: {}, pending {}",
                v.confirmed,
                v.confirmed_tickets,
                if rejected.is_empty() {
                    "none".to_owned()
                } else {
                    rejected.join(", ")
                },
                v.pending
            )?;
        }
        if let Some(d) = self.decided_within() {
            writeln!(f, "  all final   {d}")?;
        }
        let problems = self.problems();
        match (problems.is_empty(), self.verification.is_some()) {
            (true, true) => writeln!(f, "  invariants  all hold"),
            (true, false) => writeln!(f, "  invariants  not checked (use --verify)"),
            (false, _) => {
                writeln!(f, "  invariants  BROKEN:")?;
                for p in problems {
                    writeln!(f, "    - {p}")?;
                }
                Ok(())
            }
        }
    }
}
