//! `ticket-svc rush`: a crowd of simulated buyers against any deployment's HTTP API.
//!
//! Each of `concurrency` slots keeps one keep-alive connection and takes the next buyer from a
//! shared counter. A buyer buys 1..=min(4, max_per_buyer) tickets; some retry with the same
//! Idempotency-Key (and must get the same purchase back); a few send a bad request (and must get
//! a 400). With `--rate R` buyer `i` is due at `start + i/R` and its latency is measured from
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
use http::{Method, StatusCode};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use ticket_svc::domain::{EventId, Position, PurchaseStatus};

pub mod client;
mod error;
pub mod html;
mod report;
pub mod svg;
mod target;
pub mod timeline;
pub mod verify;

pub use error::RushError;
pub use report::{Kill, RushReport};
pub use target::{Route, Target};

use timeline::{Second, SlotSeconds, SoldSample, Timeline};

use verify::{EventCounts, Observed};

/// Settings for one rush.
#[derive(Debug, Clone)]
pub struct RushConfig {
    /// Where: the site's addresses. Slot `k` starts on target `k` modulo their number, and a
    /// request that fails moves its slot to the next one.
    pub targets: Vec<Target>,
    /// Which event.
    pub event: EventId,
    /// How many buyers.
    pub buyers: u64,
    /// Buyers in flight at once (connections).
    pub concurrency: usize,
    /// Buyers started per second (open model), or as fast as answered (closed model).
    pub rate: Option<f64>,
    /// Poll every purchase to its final state and check the invariants.
    pub verify: bool,
    /// Seed for the buyers' choices.
    pub seed: u64,
    /// Deadline per request.
    pub request_timeout: Duration,
    /// The longest `--verify` waits for purchases to become final.
    pub verify_timeout: Duration,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub show_progress: bool,
    /// Times a request is sent again, on the next target, after no answer or a 502, 503 or 504
    /// (see [`target`]).
    pub resends: u32,
    /// A buyer whose request still failed after its re-sends breaks the run (for runs where
    /// processes are killed on purpose: the re-sends must absorb every failure).
    pub require_answers: bool,
}

impl RushConfig {
    /// The most buyers one rush may have.
    pub const MAX_BUYERS: u64 = 10_000_000;
    /// The most concurrent slots.
    pub const MAX_CONCURRENCY: usize = 4_096;

    /// Re-sends per request by default: with their pauses (50 ms doubling to 1 s) a request is
    /// tried for about 4.5 s, past a process restart or a broker election.
    pub const DEFAULT_RESENDS: u32 = 8;

    /// The demo's rush: `buyers` as fast as answered with `concurrency` in flight, seed 1, 10 s
    /// per request, failures sent again [`Self::DEFAULT_RESENDS`] times, then every purchase
    /// polled to its final state (for up to 120 s) and the invariants checked, with a progress
    /// bar.
    pub fn verified(targets: Vec<Target>, event: EventId, buyers: u64, concurrency: usize) -> Self {
        Self {
            targets,
            event,
            buyers,
            concurrency,
            rate: None,
            verify: true,
            seed: 1,
            request_timeout: Duration::from_secs(10),
            verify_timeout: Duration::from_secs(120),
            show_progress: true,
            resends: Self::DEFAULT_RESENDS,
            require_answers: false,
        }
    }

    fn check(&self) -> Result<(), RushError> {
        if self.targets.is_empty() {
            return Err(RushError::BadConfig("at least one target".into()));
        }
        if self.buyers == 0 || self.buyers > Self::MAX_BUYERS {
            return Err(RushError::BadConfig(format!(
                "buyers must be 1..={}",
                Self::MAX_BUYERS
            )));
        }
        if self.concurrency == 0 || self.concurrency > Self::MAX_CONCURRENCY {
            return Err(RushError::BadConfig(format!(
                "concurrency must be 1..={}",
                Self::MAX_CONCURRENCY
            )));
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(RushError::BadConfig("rate must be above 0".into()));
        }
        Ok(())
    }
}

/// What one buyer does (deterministic from the seed and the buyer's index). Every purchase
/// carries an Idempotency-Key, as a checkout page makes one per purchase: a buyer whose request
/// failed may then send it again, on another address, and still buy once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BuyerPlan {
    buyer: String,
    quantity: u32,
    key: String,
    /// Sent this many times in all (a second time: the buyer pressed "buy" again, and must get
    /// the same purchase back).
    sends: u8,
    is_bad: bool,
}

fn plan(seed: u64, i: u64, max_quantity: u32) -> BuyerPlan {
    let mut rng = SmallRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let is_bad = rng.random_bool(0.02);
    let retries = !is_bad && rng.random_bool(0.10);
    BuyerPlan {
        buyer: format!("buyer-{seed}-{i}"),
        quantity: if is_bad {
            0
        } else {
            rng.random_range(1..=max_quantity.clamp(1, 4))
        },
        key: format!("rush-{seed}-{i}"),
        sends: if retries { 2 } else { 1 },
        is_bad,
    }
}

/// The header a retrying buyer repeats.
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// A buyer's `POST /events/{id}/purchases` body.
#[derive(serde::Serialize)]
struct PurchaseBody<'a> {
    buyer: &'a str,
    quantity: u32,
}

fn purchase_body(plan: &BuyerPlan) -> Bytes {
    let body = PurchaseBody {
        buyer: &plan.buyer,
        quantity: plan.quantity,
    };
    // Serializing two plain fields cannot fail; an empty body would be refused with a 400.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The fields of a 202 the crowd checks (the rest is ignored).
#[derive(serde::Deserialize)]
struct AcceptedAnswer<'a> {
    #[serde(borrow)]
    purchase_id: std::borrow::Cow<'a, str>,
    position: u64,
}

/// The fields of `GET /purchases/{id}` the verify phase reads (the rest is ignored).
#[derive(serde::Deserialize)]
struct StatusAnswer<'a> {
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    reason: Option<std::borrow::Cow<'a, str>>,
}

struct EventInfo {
    tickets: u32,
    max_per_buyer: u32,
    sold: u32,
}

async fn read_event(route: &mut Route, event: EventId) -> Result<EventInfo, RushError> {
    let fail = |reason: String| RushError::Event { event, reason };
    let (status, body) = route
        .get(&format!("/events/{event}"))
        .await
        .map_err(|e| fail(e.to_string()))?;
    if status != StatusCode::OK {
        return Err(fail(format!("answered {status}")));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| fail(format!("bad JSON: {e}")))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| fail(format!("no {name} in the answer")))
    };
    Ok(EventInfo {
        tickets: field("tickets")?,
        max_per_buyer: field("max_per_buyer")?,
        sold: field("sold")?,
    })
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
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant figures.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

struct Shared {
    config: RushConfig,
    max_quantity: u32,
    next: AtomicU64,
    start: Instant,
    progress: ProgressBar,
    shutdown: CancellationToken,
    timeline: Mutex<Timeline>,
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
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= c.buyers {
            break;
        }
        let plan = plan(c.seed, i, shared.max_quantity);
        let mut due = None;
        if let Some(rate) = c.rate {
            let at = shared.start + Duration::from_secs_f64(i as f64 / rate);
            tokio::select! {
                () = shared.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(at) => {}
            }
            due = Some(at);
        }
        let body = purchase_body(&plan);
        // Made once per buyer and sent with each of its attempts. The plan's keys are
        // `rush-{seed}-{i}`, always a valid header value.
        let key = http::HeaderValue::from_str(&plan.key)
            .ok()
            .map(|v| [(IDEMPOTENCY_KEY, v)]);
        let headers = key.as_ref().map_or(&[][..], |k| &k[..]);
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
                    !headers.is_empty(),
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
            if plan.is_bad {
                if status != StatusCode::BAD_REQUEST {
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
                        buyer: plan.buyer.clone(),
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

/// How often the event's `sold` is read: a few requests per second, so a sell-out that takes
/// a second still draws a curve.
const SOLD_SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The most `sold` samples one rush keeps (six hours at four a second).
const MAX_SOLD_SAMPLES: usize = Timeline::MAX_SECONDS * 4;

/// Reads the event's `sold` through the target every [`SOLD_SAMPLE_EVERY`] until `stop`.
async fn sample_sold(
    mut route: Route,
    event: EventId,
    start: Instant,
    stop: CancellationToken,
) -> Vec<SoldSample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(SOLD_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while samples.len() < MAX_SOLD_SAMPLES {
        let read = tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => tokio::select! {
                () = stop.cancelled() => break,
                r = read_event(&mut route, event) => r,
            },
        };
        match read {
            Ok(e) => samples.push(SoldSample {
                at: Instant::now().saturating_duration_since(start),
                sold: e.sold,
            }),
            Err(e) => tracing::debug!(error = %e, "sampling the event's sold count failed"),
        }
    }
    samples
}

/// The purchase's status if it is final (`None` when pending or unreadable).
async fn final_status(route: &mut Route, id: &str) -> Option<PurchaseStatus> {
    let Ok((StatusCode::OK, body)) = route.get(&format!("/purchases/{id}")).await else {
        return None;
    };
    let seen: StatusAnswer = serde_json::from_slice(&body).ok()?;
    PurchaseStatus::parse(&seen.status, seen.reason.as_deref())
        .filter(|s| *s != PurchaseStatus::Pending)
}

/// Polls one purchase every 20 ms until it is final: the moment it was seen final, or `None`
/// at the deadline. Used on the last purchase in line, which the ordered workers decide last,
/// so this measures the workers' lag without the cost of polling every purchase.
async fn probe_until_final(
    config: &RushConfig,
    id: &str,
    shutdown: &CancellationToken,
) -> Option<Instant> {
    let deadline = Instant::now() + config.verify_timeout;
    let mut route = Route::new(&config.targets, 0, config.request_timeout, config.resends);
    loop {
        if final_status(&mut route, id).await.is_some() {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Polls every purchase until it is final or the deadline passes. Returns the moment the last
/// pending purchase was seen final (an upper bound on when the last one was decided), or `None`
/// when some never were.
async fn poll_until_final(
    config: &RushConfig,
    purchases: &mut [Observed],
    shutdown: &CancellationToken,
) -> Option<Instant> {
    let deadline = Instant::now() + config.verify_timeout;
    let mut last_seen_final: Option<Instant> = None;
    loop {
        let pending: Vec<usize> = purchases
            .iter()
            .enumerate()
            .filter(|(_, p)| p.status == PurchaseStatus::Pending)
            .map(|(i, _)| i)
            .collect();
        if pending.is_empty() {
            return Some(last_seen_final.unwrap_or_else(Instant::now));
        }
        if Instant::now() >= deadline || shutdown.is_cancelled() {
            return None;
        }
        let chunk = pending.len().div_ceil(config.concurrency).max(1);
        let mut tasks = JoinSet::new();
        for (k, part) in pending.chunks(chunk).enumerate() {
            let ids: Vec<(usize, String)> = part
                .iter()
                .filter_map(|i| purchases.get(*i).map(|p| (*i, p.purchase_id.clone())))
                .collect();
            let mut route = Route::new(&config.targets, k, config.request_timeout, config.resends);
            tasks.spawn(async move {
                let mut found = Vec::new();
                for (i, id) in ids {
                    if let Some(s) = final_status(&mut route, &id).await {
                        found.push((i, s, Instant::now()));
                    }
                }
                found
            });
        }
        while let Some(done) = tasks.join_next().await {
            for (i, status, seen) in done.unwrap_or_default() {
                if let Some(p) = purchases.get_mut(i) {
                    p.status = status;
                    last_seen_final = last_seen_final.max(Some(seen));
                }
            }
        }
        if purchases
            .iter()
            .any(|p| p.status == PurchaseStatus::Pending)
        {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// Runs the crowd (stopping early, with what it has, when `shutdown` is cancelled).
pub async fn run(config: RushConfig, shutdown: CancellationToken) -> Result<RushReport, RushError> {
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
    let shared = Arc::new(Shared {
        max_quantity: before.max_per_buyer,
        next: AtomicU64::new(0),
        start: Instant::now(),
        progress: progress.clone(),
        shutdown: shutdown.clone(),
        config: config.clone(),
        timeline: Mutex::new(Timeline::default()),
    });
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
        let _ = latency_us.add(h);
    }
    progress.finish_and_clear();
    let elapsed = total.last_answer.map_or(Duration::ZERO, |t| {
        t.saturating_duration_since(shared.start)
    });
    let buyers = shared.next.load(Ordering::Relaxed).min(config.buyers);

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
        requests: total.requests,
        statuses: total.statuses,
        transport_errors: total.transport_errors,
        resent: total.resent,
        failed: total.failed,
        require_answers: config.require_answers,
        kills: Vec::new(),
        accepted: total.accepted.len() as u64,
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
            let p = plan(7, i, 2);
            assert_eq!(p, plan(7, i, 2));
            assert!(p.is_bad || (1..=2).contains(&p.quantity));
            assert!(p.key.starts_with("rush-7-"), "every purchase carries a key");
        }
        let bad = (0..10_000).filter(|i| plan(1, *i, 4).is_bad).count();
        assert!((100..400).contains(&bad), "about 2% bad: {bad}");
    }
}
