//! `ticket-svc rush`: a crowd of simulated buyers against any deployment's HTTP API.
//!
//! First every buyer logs in through the API ([`login`]: a code by e-mail, to the crowd's
//! mailbox, exchanged for a session). Then each of `concurrency` slots keeps one keep-alive connection and takes the next buyer from a
//! shared counter. A buyer buys 1..=min(4, max_per_buyer) tickets with their session; some
//! retry with the same Idempotency-Key (and must get the same purchase back); a few send a bad
//! request (and must get a 400) or a forged session (and must get a 401). With `--rate R` buyer `i` is due at `start + i/R` and its latency is measured from
//! that intended time, so a slow server cannot hide its queueing (no coordinated omission).
//! With `--verify` every accepted purchase is polled to a final state and the docs/DESIGN.md
//! invariants are checked ([`verify`]), and the time from the rush's last answer to the moment
//! every purchase was seen final is measured.
//!
//! Over time ([`timeline`]): each slot counts its requests, answers and latencies per second in
//! a fixed-size local bucket, flushed into the shared timeline once per second (no allocation or
//! lock per request); a sampler reads the event's `sold` through the target four times a
//! second during the rush and the verify phase.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderValue, Method, StatusCode};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use ticket_svc::domain::{Position, PurchaseStatus};

pub mod client;
mod config;
mod error;
mod event;
pub mod html;
pub mod login;
pub mod mailbox;
mod polling;
mod report;
pub mod svg;
mod target;
pub mod timeline;
pub mod verify;
pub mod waiting;

pub use config::RushConfig;
pub use error::RushError;
pub use event::{NewEvent, create_event};
pub use login::Codes;
pub use mailbox::Mailbox;
pub use report::{Kill, RushReport};
pub use target::{Route, Target};

use event::{read_event, sample_sold};
use polling::{poll_until_final, probe_until_final};
use timeline::{Second, SlotSeconds, SoldSample, Timeline};

use verify::{EventCounts, Observed};

/// What one buyer does (deterministic from the seed and the buyer's index). Every purchase
/// carries an Idempotency-Key, as a checkout page makes one per purchase: a buyer whose request
/// failed may then send it again, on another address, and still buy once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BuyerPlan {
    quantity: u32,
    key: String,
    /// Sent this many times in all (a second time: the buyer pressed "buy" again, and must get
    /// the same purchase back).
    sends: u8,
    bad: Option<Bad>,
}

/// A request the API must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    /// Quantity 0: a 400.
    Quantity,
    /// The session altered: a 401 (nobody buys as someone else).
    ForgedSession,
    /// Under a waiting room, no permit: a 403 (nobody buys around the line).
    NoPermit,
}

impl Bad {
    fn expected(self) -> StatusCode {
        match self {
            Self::Quantity => StatusCode::BAD_REQUEST,
            Self::ForgedSession => StatusCode::UNAUTHORIZED,
            Self::NoPermit => StatusCode::FORBIDDEN,
        }
    }
}

/// Buyer `i`'s plan; `in_line`: the event has a waiting room (some buyers then try without
/// their permit).
fn plan(seed: u64, i: u64, max_quantity: u32, in_line: bool) -> BuyerPlan {
    let mut rng = SmallRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let bad = if rng.random_bool(0.02) {
        Some(Bad::Quantity)
    } else if rng.random_bool(0.01) {
        Some(Bad::ForgedSession)
    } else if in_line && rng.random_bool(0.01) {
        Some(Bad::NoPermit)
    } else {
        None
    };
    let retries = bad.is_none() && rng.random_bool(0.10);
    BuyerPlan {
        quantity: if bad == Some(Bad::Quantity) {
            0
        } else {
            rng.random_range(1..=max_quantity.clamp(1, 4))
        },
        key: format!("rush-{seed}-{i}"),
        sends: if retries { 2 } else { 1 },
        bad,
    }
}

/// `authorization` with one character of its payload changed: a session nobody signed.
fn forged(authorization: &HeaderValue) -> HeaderValue {
    let mut bytes = authorization.as_bytes().to_vec();
    let at = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(at) {
        *b = if *b == b'A' { b'B' } else { b'A' };
    }
    HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| authorization.clone())
}

/// The header a retrying buyer repeats.
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// A buyer's `POST /events/{id}/purchases` body (the buyer is the session's).
#[derive(serde::Serialize)]
struct PurchaseBody<'a> {
    quantity: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    permit: Option<&'a str>,
}

fn purchase_body(plan: &BuyerPlan, permit: Option<&str>) -> Bytes {
    let body = PurchaseBody {
        quantity: plan.quantity,
        permit: permit.filter(|_| plan.bad != Some(Bad::NoPermit)),
    };
    // Serializing a plain field cannot fail; an empty body would be refused with a 400.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The fields of a 202 the crowd checks (the rest is ignored).
#[derive(serde::Deserialize)]
struct AcceptedAnswer<'a> {
    #[serde(borrow)]
    purchase_id: std::borrow::Cow<'a, str>,
    position: u64,
}

#[derive(Default)]
struct SlotResult {
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    resent: u64,
    failed: u64,
    accepted: Vec<Observed>,
    bad_not_refused: u64,
    retry_mismatches: u64,
    last_answer: Option<Instant>,
    first_sent: Option<Instant>,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Where the slots take their next buyer: in index order, or as a waiting room's line lets
/// them through (with their permits).
enum Buyers {
    InOrder(AtomicU64),
    Admitted(tokio::sync::Mutex<tokio::sync::mpsc::Receiver<waiting::Admitted>>),
}

impl Buyers {
    /// The next buyer and its permit, or `None` when every buyer has been taken.
    async fn next(&self, buyers: u64) -> Option<(u64, Option<String>)> {
        match self {
            Self::InOrder(next) => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                (i < buyers).then_some((i, None))
            }
            Self::Admitted(line) => line
                .lock()
                .await
                .recv()
                .await
                .map(|a| (a.buyer, Some(a.permit))),
        }
    }
}

struct Shared {
    config: RushConfig,
    max_quantity: u32,
    buyers: Buyers,
    /// Buyers taken by the slots.
    taken: AtomicU64,
    start: Instant,
    progress: ProgressBar,
    shutdown: CancellationToken,
    timeline: Mutex<Timeline>,
    /// Buyer `i`'s session, from the login phase.
    sessions: Arc<Vec<Option<login::Session>>>,
    /// The event has a waiting room.
    in_line: bool,
}

impl Shared {
    /// A route over the targets for the `k`th user of them.
    fn route(&self, k: usize) -> Route {
        let c = &self.config;
        Route::new(&c.targets, k, c.request_timeout, c.resends)
    }
}

async fn slot(shared: Arc<Shared>, k: usize) -> (SlotResult, Histogram<u64>) {
    let c = &shared.config;
    let mut route = shared.route(k);
    let mut out = SlotResult::default();
    let mut hist = new_histogram();
    let suffix = format!("/events/{}/purchases", c.event);
    let mut seconds = SlotSeconds::default();
    // Once per second per slot: the lock is never held across an await.
    let flush = |i: usize, second: &Second| {
        if let Ok(mut t) = shared.timeline.lock() {
            t.add(i, second);
        }
    };
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        let Some((i, permit)) = shared.buyers.next(c.buyers).await else {
            break;
        };
        shared.taken.fetch_add(1, Ordering::Relaxed);
        let plan = plan(c.seed, i, shared.max_quantity, shared.in_line);
        // A buyer whose login failed (counted then) does not buy.
        let Some(session) = usize::try_from(i)
            .ok()
            .and_then(|i| shared.sessions.get(i))
            .and_then(Option::as_ref)
        else {
            shared.progress.inc(1);
            continue;
        };
        let mut due = None;
        if let Some(rate) = c.rate {
            let at = shared.start + Duration::from_secs_f64(i as f64 / rate);
            tokio::select! {
                () = shared.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(at) => {}
            }
            due = Some(at);
        }
        let body = purchase_body(&plan, permit.as_deref());
        // Made once per buyer and sent with each of its attempts. The plan's keys are
        // `rush-{seed}-{i}`, always a valid header value.
        let authorization = match plan.bad {
            Some(Bad::ForgedSession) => forged(&session.authorization),
            _ => session.authorization.clone(),
        };
        let mut headers = vec![(http::header::AUTHORIZATION, authorization)];
        headers.extend(
            HeaderValue::from_str(&plan.key)
                .ok()
                .map(|v| (IDEMPOTENCY_KEY, v)),
        );
        let keyed = headers.len() > 1;
        let headers = &headers[..];
        let mut first: Option<(String, u64)> = None;
        for send in 0..plan.sends {
            // The buyer's latency runs from the first attempt (or the moment the buyer was due)
            // to the last answer, re-sends included.
            let mut began = None;
            let mut attempts = 0u64;
            let answer = route
                .send(
                    &Method::POST,
                    |prefix| format!("{prefix}{suffix}"),
                    headers,
                    &body,
                    keyed,
                    |attempt| {
                        let sent = match (send, began, due) {
                            (0, None, Some(due)) => due,
                            _ => attempt.sent,
                        };
                        began.get_or_insert(sent);
                        attempts += 1;
                        out.requests += 1;
                        seconds
                            .at(sent.saturating_duration_since(shared.start), flush)
                            .sent += 1;
                        let now = Instant::now();
                        let bucket = seconds.at(now.saturating_duration_since(shared.start), flush);
                        match &attempt.answer {
                            Err(e) => {
                                tracing::debug!(error = %e, "request failed");
                                bucket.errors += 1;
                                out.transport_errors += 1;
                            }
                            Ok((status, _)) => {
                                if *status != StatusCode::ACCEPTED {
                                    bucket.other += 1;
                                }
                                *out.statuses.entry(status.as_u16()).or_default() += 1;
                            }
                        }
                    },
                )
                .await;
            out.resent += attempts.saturating_sub(1);
            let now = Instant::now();
            out.last_answer = Some(now);
            let began = began.unwrap_or(now);
            out.first_sent = Some(out.first_sent.map_or(began, |f| f.min(began)));
            let us =
                u64::try_from(now.saturating_duration_since(began).as_micros()).unwrap_or(u64::MAX);
            let _ = hist.record(us.clamp(1, 600_000_000));
            let answered_at = now.saturating_duration_since(shared.start);
            seconds.at(answered_at, flush).latency.record(us);
            let failed = target::is_failure(&answer);
            let (status, body) = match answer {
                Ok(a) if !failed => a,
                _ => {
                    out.failed += 1;
                    continue;
                }
            };
            if let Some(bad) = plan.bad {
                if status != bad.expected() {
                    out.bad_not_refused += 1;
                }
                continue;
            }
            if status != StatusCode::ACCEPTED {
                continue;
            }
            let Ok(AcceptedAnswer {
                purchase_id: id,
                position,
            }) = serde_json::from_slice(&body)
            else {
                out.bad_not_refused += 1;
                continue;
            };
            match &first {
                None => {
                    seconds.at(answered_at, flush).accepted += 1;
                    let id = id.into_owned();
                    first = Some((id.clone(), position));
                    out.accepted.push(Observed {
                        purchase_id: id,
                        buyer: session.buyer.clone(),
                        quantity: plan.quantity,
                        position: Position(position),
                        status: PurchaseStatus::Pending,
                    });
                }
                Some((fid, fpos)) => {
                    if *fid != id || *fpos != position {
                        out.retry_mismatches += 1;
                    }
                }
            }
        }
        shared.progress.inc(1);
    }
    seconds.take(flush);
    (out, hist)
}

/// Runs the crowd: logs every buyer in (reading their codes from `codes`), then rushes
/// (stopping early, with what it has, when `shutdown` is cancelled).
pub async fn run(
    config: RushConfig,
    codes: impl Into<Codes>,
    shutdown: CancellationToken,
) -> Result<RushReport, RushError> {
    config.check()?;
    // An event that cannot be read fails the run before anyone logs in for it.
    let mut route = Route::new(&config.targets, 0, config.request_timeout, config.resends);
    read_event(&mut route, config.event).await?;
    let logins = login::log_in_all(&config, &codes.into(), &shutdown).await;
    run_logged_in(config, logins, shutdown).await
}

/// The rush of buyers who logged in already ([`login::log_in_all`]): for runs that time
/// something against the rush alone.
pub async fn run_logged_in(
    config: RushConfig,
    logins: login::Logins,
    shutdown: CancellationToken,
) -> Result<RushReport, RushError> {
    config.check()?;
    let mut route = Route::new(&config.targets, 0, config.request_timeout, config.resends);
    let before = read_event(&mut route, config.event).await?;

    let progress = if config.show_progress {
        let bar = ProgressBar::with_draw_target(Some(config.buyers), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} buyers ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    if before.room.is_some() && config.rate.is_some() {
        return Err(RushError::BadConfig(
            "the event has a waiting room, which paces the crowd: --rate does not apply".into(),
        ));
    }
    let sessions = Arc::new(logins.sessions);
    let start = Instant::now();
    let (buyers, line_stage) = match before.room {
        Some(room) => {
            let (admitted, task) = waiting::start(
                &config,
                Arc::clone(&sessions),
                room,
                start,
                shutdown.clone(),
            );
            (
                Buyers::Admitted(tokio::sync::Mutex::new(admitted)),
                Some(task),
            )
        }
        None => (Buyers::InOrder(AtomicU64::new(0)), None),
    };
    let shared = Arc::new(Shared {
        max_quantity: before.max_per_buyer,
        start,
        buyers,
        taken: AtomicU64::new(0),
        in_line: line_stage.is_some(),
        progress: progress.clone(),
        shutdown: shutdown.clone(),
        config: config.clone(),
        timeline: Mutex::new(Timeline::default()),
        sessions,
    });
    let (login_failures, login_elapsed) = (logins.failed, logins.elapsed);
    let stop_sampling = shutdown.child_token();
    let sampler = tokio::spawn(sample_sold(
        shared.route(0),
        config.event,
        shared.start,
        stop_sampling.clone(),
    ));
    let mut slots = JoinSet::new();
    let n = config
        .concurrency
        .min(usize::try_from(config.buyers).unwrap_or(usize::MAX));
    for k in 0..n {
        slots.spawn(slot(Arc::clone(&shared), k));
    }
    let mut total = SlotResult::default();
    let mut latency_us = new_histogram();
    while let Some(done) = slots.join_next().await {
        let Ok((r, h)) = done else { continue };
        total.requests += r.requests;
        for (s, n) in r.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
        total.transport_errors += r.transport_errors;
        total.resent += r.resent;
        total.failed += r.failed;
        total.accepted.extend(r.accepted);
        total.bad_not_refused += r.bad_not_refused;
        total.retry_mismatches += r.retry_mismatches;
        total.last_answer = total.last_answer.max(r.last_answer);
        total.first_sent = match (total.first_sent, r.first_sent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let _ = latency_us.add(h);
    }
    progress.finish_and_clear();
    // Purchases begin at once, or (behind a waiting room) once the first buyer is admitted.
    let first_sent = total.first_sent.unwrap_or(shared.start);
    let elapsed = total
        .last_answer
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(first_sent));
    let buyers = shared.taken.load(Ordering::Relaxed).min(config.buyers);
    let line = match line_stage {
        Some(task) => Some(task.await.unwrap_or_default()),
        None => None,
    };
    let login_count = config.buyers.saturating_sub(login_failures);

    let mut decided_after = None;
    let mut last_in_line_decided_after = None;
    let mut sold_after = None;
    let verification = if config.verify {
        let last_in_line = total
            .accepted
            .iter()
            .max_by_key(|p| p.position)
            .map(|p| p.purchase_id.clone());
        let probe = async {
            match &last_in_line {
                Some(id) => probe_until_final(&config, id, &shutdown).await,
                None => None,
            }
        };
        let (decided, last_decided) = tokio::join!(
            poll_until_final(&config, &mut total.accepted, &shutdown),
            probe
        );
        let since_last_answer = |at: Instant| {
            total
                .last_answer
                .map_or(Duration::ZERO, |last| at.saturating_duration_since(last))
        };
        decided_after = decided.map(since_last_answer);
        last_in_line_decided_after = last_decided.map(since_last_answer);
        let after = read_event(&mut route, config.event).await;
        stop_sampling.cancel();
        let after = after?;
        sold_after = Some(SoldSample {
            at: Instant::now().saturating_duration_since(shared.start),
            sold: after.sold,
        });
        Some(verify::check(
            EventCounts {
                tickets: after.tickets,
                max_per_buyer: after.max_per_buyer,
                sold_before: before.sold,
                sold_after: after.sold,
            },
            &total.accepted,
            total.retry_mismatches,
        ))
    } else {
        None
    };
    stop_sampling.cancel();
    let mut sold = vec![SoldSample {
        at: Duration::ZERO,
        sold: before.sold,
    }];
    sold.extend(sampler.await.unwrap_or_default());
    sold.extend(sold_after);
    sold.sort_by_key(|s| s.at);
    let timeline = shared
        .timeline
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();
    Ok(RushReport {
        targets: config.targets.iter().map(|t| t.url.clone()).collect(),
        started: shared.start,
        event: config.event,
        buyers,
        logins: login_count,
        login_failures,
        login_elapsed,
        line,
        requests: total.requests,
        statuses: total.statuses,
        transport_errors: total.transport_errors,
        resent: total.resent,
        failed: total.failed,
        require_answers: config.require_answers,
        kills: Vec::new(),
        accepted: total.accepted.len() as u64,
        purchases_began: first_sent.saturating_duration_since(shared.start),
        elapsed,
        latency_us,
        bad_not_refused: total.bad_not_refused,
        retry_mismatches: total.retry_mismatches,
        verification,
        tickets: before.tickets,
        decided_after,
        last_in_line_decided_after,
        timeline,
        sold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_and_within_the_limit() {
        for i in 0..1_000 {
            let p = plan(7, i, 2, false);
            assert_eq!(p, plan(7, i, 2, false));
            assert_ne!(p.bad, Some(Bad::NoPermit), "only in a line");
            assert!(p.bad == Some(Bad::Quantity) || (1..=2).contains(&p.quantity));
            assert!(p.key.starts_with("rush-7-"), "every purchase carries a key");
        }
        let count = |b| {
            (0..10_000)
                .filter(|i| plan(1, *i, 4, true).bad == Some(b))
                .count()
        };
        let bad = count(Bad::Quantity);
        assert!((100..400).contains(&bad), "about 2% bad: {bad}");
        let forged = count(Bad::ForgedSession);
        assert!((40..200).contains(&forged), "about 1% forged: {forged}");
        let no_permit = count(Bad::NoPermit);
        assert!(
            (40..200).contains(&no_permit),
            "about 1% without a permit: {no_permit}"
        );
    }
}
