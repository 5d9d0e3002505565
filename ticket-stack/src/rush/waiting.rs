//! The crowd in a waiting room: every logged-in buyer joins the event's line, waits its turn
//! as a buyer's page does (until the opening, then until the moment its place should be
//! admitted, polling then), asks for a permit, and is handed to the purchase slots with it, in
//! the order the permits came.
//!
//! A buyer's wait costs no connection: each buyer is a task that sleeps, and takes one of the
//! crowd's `concurrency` connections only for a request. What the crowd saw is kept for
//! `--verify`: each permit's place and time and each `not_admitted` refusal's, so that a place
//! refused after a later place was admitted (the line not admitted in order) is caught.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::RushConfig;
use super::login::Session;
use super::target::Route;
use ticket_svc::domain::EventId;

/// How long a buyer may wait in line before giving up.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// The longest pause between two looks at the place (a page polls every 2 s at most).
const MAX_POLL_PAUSE: Duration = Duration::from_secs(2);
/// After the opening, buyers first look at their place spread over this long, as pages opened
/// at different moments do (not all at the same millisecond).
const OPENING_SPREAD: Duration = Duration::from_millis(1000);

/// An event's waiting room, as the crowd reads it from `GET /events/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Places admitted per second.
    pub admit_per_s: u32,
    /// The proof of work asked of each joiner (0: none).
    pub proof_of_work_bits: u8,
}

/// A buyer let through: its index, its permit and its place.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The buyer's index in the crowd.
    pub buyer: u64,
    /// The permit to send with the purchase.
    pub permit: String,
    /// The place it was admitted at.
    pub place: u64,
}

/// What the crowd saw of the line.
#[derive(Debug, Default, Clone)]
pub struct LineSeen {
    /// Buyers who joined.
    pub joined: u64,
    /// Buyers who got a permit.
    pub admitted: u64,
    /// Buyers who never got one (a failed join or permit, or the wait's limit).
    pub failed: u64,
    /// Requests to read a place.
    pub polls: u64,
    /// Proofs of work solved to join.
    pub proofs: u64,
    /// Permit requests refused `not_admitted` (asked a little early: clocks differ).
    pub too_early: u64,
    /// Buyers who joined before the sale opened (the pre-queue, drawn at the opening).
    pub pre_queue: u64,
    /// When each buyer joined, since the rush started.
    pub joins: Vec<Duration>,
    /// Every permit: (place, when, since the rush started).
    pub permits: Vec<(u64, Duration)>,
    /// Every `not_admitted` refusal: (place, when).
    pub refusals: Vec<(u64, Duration)>,
}

impl LineSeen {
    /// Places refused after a later place was admitted: the line did not admit in order.
    /// `slack` absorbs the instances' clock differences and the requests' own time in flight.
    pub fn out_of_order(&self, slack: Duration) -> Vec<String> {
        let mut permits = self.permits.clone();
        permits.sort_by_key(|(_, at)| *at);
        // The highest place admitted by each moment.
        let mut highest = Vec::with_capacity(permits.len());
        let mut top = 0;
        for (place, at) in &permits {
            top = top.max(*place);
            highest.push((*at, top));
        }
        let mut broken = Vec::new();
        for (place, refused_at) in &self.refusals {
            let before = refused_at.saturating_sub(slack);
            let i = highest.partition_point(|(at, _)| *at <= before);
            if let Some((at, top)) = i.checked_sub(1).and_then(|i| highest.get(i))
                && top > place
            {
                broken.push(format!(
                    "place {place} was refused at {:.3} s although place {top} was admitted at {:.3} s",
                    refused_at.as_secs_f64(),
                    at.as_secs_f64()
                ));
            }
        }
        broken
    }
}

/// The connections the line stage's buyers share, one request at a time each.
struct Routes {
    free: Mutex<Vec<Route>>,
    permits: Semaphore,
}

impl Routes {
    async fn send(
        &self,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: &Bytes,
    ) -> Option<(StatusCode, Bytes)> {
        let _turn = self.permits.acquire().await.ok()?;
        let mut route = self.free.lock().await.pop()?;
        let answer = route
            .send(
                method,
                |p| format!("{p}{path}"),
                headers,
                body,
                true,
                |_| {},
            )
            .await
            .ok();
        self.free.lock().await.push(route);
        answer
    }
}

/// Starts the line stage: every buyer with a session joins `event`'s line and, once admitted,
/// comes out of the returned receiver with its permit. The task's result is what it saw.
pub fn start(
    config: &RushConfig,
    sessions: Arc<Vec<Option<Session>>>,
    room: Room,
    started: Instant,
    shutdown: CancellationToken,
) -> (mpsc::Receiver<Admitted>, tokio::task::JoinHandle<LineSeen>) {
    let n = config.concurrency.max(1);
    let routes = Arc::new(Routes {
        free: Mutex::new(
            (0..n)
                .map(|k| Route::new(&config.targets, k, config.request_timeout, config.resends))
                .collect(),
        ),
        permits: Semaphore::new(n),
    });
    let (tx, rx) = mpsc::channel(n * 4);
    let event = config.event;
    let seen = Arc::new(std::sync::Mutex::new(LineSeen::default()));
    let polls = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        let mut buyers = JoinSet::new();
        for (i, session) in sessions.iter().enumerate() {
            let Some(session) = session.clone() else {
                continue;
            };
            let buyer = Buyer {
                index: i as u64,
                event,
                session,
                routes: Arc::clone(&routes),
                seen: Arc::clone(&seen),
                polls: Arc::clone(&polls),
                started,
                room,
            };
            let (tx, stop) = (tx.clone(), shutdown.clone());
            buyers.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => false,
                    admitted = buyer.wait_turn() => match admitted {
                        Some(a) => tx.send(a).await.is_ok(),
                        None => false,
                    },
                }
            });
        }
        drop(tx);
        let mut failed = 0;
        while let Some(done) = buyers.join_next().await {
            if !done.unwrap_or(false) {
                failed += 1;
            }
        }
        let mut seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        seen.failed = failed;
        seen.polls = polls.load(Ordering::Relaxed);
        seen
    });
    (rx, task)
}

/// One buyer in line.
struct Buyer {
    index: u64,
    event: EventId,
    session: Session,
    routes: Arc<Routes>,
    seen: Arc<std::sync::Mutex<LineSeen>>,
    polls: Arc<AtomicU64>,
    started: Instant,
    room: Room,
}

/// The parts of a line view the crowd reads.
#[derive(serde::Deserialize)]
struct View {
    state: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    place: Option<u64>,
    #[serde(default)]
    ahead: Option<u64>,
    opens_at: String,
    /// The line's rate now (an auto-paced room's moves).
    #[serde(default)]
    admit_per_s: Option<u32>,
}

impl Buyer {
    fn note(&self, f: impl FnOnce(&mut LineSeen)) {
        if let Ok(mut s) = self.seen.lock() {
            f(&mut s);
        }
    }

    fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// Joins, waits, and asks for the permit; `None` when the line failed this buyer.
    async fn wait_turn(&self) -> Option<Admitted> {
        let json = (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let auth = (
            http::header::AUTHORIZATION,
            self.session.authorization.clone(),
        );
        let join_body = if self.room.proof_of_work_bits > 0 {
            self.prove(&auth).await?
        } else {
            Bytes::from_static(b"{}")
        };
        let (status, body) = self
            .routes
            .send(
                &Method::POST,
                &format!("/events/{}/line", self.event),
                &[json.clone(), auth.clone()],
                &join_body,
            )
            .await?;
        if status != StatusCode::CREATED {
            tracing::debug!(%status, "join refused");
            return None;
        }
        let mut view: View = serde_json::from_slice(&body).ok()?;
        let token = view.token.clone()?;
        let at = self.since_start();
        let before_open = view.state == "before_open";
        self.note(|s| {
            s.joined += 1;
            s.pre_queue += u64::from(before_open);
            s.joins.push(at);
        });
        let give_up = Instant::now() + MAX_WAIT;
        let status_path = format!("/events/{}/line?token={token}", self.event);
        let permit_body = Bytes::from(serde_json::json!({ "token": token }).to_string());
        loop {
            if Instant::now() > give_up {
                return None;
            }
            tokio::time::sleep(self.pause(&view)).await;
            if view.state == "admitted" {
                let (status, body) = self
                    .routes
                    .send(
                        &Method::POST,
                        &format!("/events/{}/permits", self.event),
                        &[json.clone(), auth.clone()],
                        &permit_body,
                    )
                    .await?;
                let place = view.place.unwrap_or(u64::MAX);
                if status == StatusCode::CREATED {
                    let permit = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()?
                        .get("permit")?
                        .as_str()?
                        .to_owned();
                    let at = self.since_start();
                    self.note(|s| {
                        s.admitted += 1;
                        s.permits.push((place, at));
                    });
                    return Some(Admitted {
                        buyer: self.index,
                        permit,
                        place,
                    });
                }
                if status != StatusCode::FORBIDDEN {
                    return None;
                }
                let at = self.since_start();
                self.note(|s| {
                    s.too_early += 1;
                    s.refusals.push((place, at));
                });
                view.state = "waiting".into();
                continue;
            }
            self.polls.fetch_add(1, Ordering::Relaxed);
            let (status, body) = self
                .routes
                .send(&Method::GET, &status_path, &[], &Bytes::new())
                .await?;
            if status != StatusCode::OK {
                return None;
            }
            view = serde_json::from_slice(&body).ok()?;
        }
    }

    /// A join's body with the proof of work the room asks: a challenge for this buyer and its
    /// solution, found off the runtime's threads.
    async fn prove(&self, auth: &(HeaderName, HeaderValue)) -> Option<Bytes> {
        let (status, body) = self
            .routes
            .send(
                &Method::GET,
                &format!("/events/{}/line/challenge", self.event),
                std::slice::from_ref(auth),
                &Bytes::new(),
            )
            .await?;
        if status != StatusCode::OK {
            return None;
        }
        let view: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let challenge = view.get("challenge")?.as_str()?.to_owned();
        let bits = u8::try_from(view.get("bits")?.as_u64()?).ok()?;
        let (challenge, solution) = tokio::task::spawn_blocking(move || {
            let solution = ticket_svc::line::proof::solve(&challenge, bits);
            (challenge, solution)
        })
        .await
        .ok()?;
        self.note(|s| s.proofs += 1);
        Some(Bytes::from(
            serde_json::json!({ "challenge": challenge, "solution": solution }).to_string(),
        ))
    }

    /// How long to wait before the next look, from what the last one said: until the opening
    /// (then a moment spread over [`OPENING_SPREAD`]), or until the place's turn at the line's
    /// pace (at most [`MAX_POLL_PAUSE`]); at once when admitted.
    fn pause(&self, view: &View) -> Duration {
        match view.state.as_str() {
            "admitted" => Duration::ZERO,
            "before_open" => {
                let opens_at = ticket_svc::domain::UnixMillis::parse_rfc3339(&view.opens_at)
                    .map_or(0, |t| t.0);
                let left = opens_at - ticket_svc::domain::UnixMillis::now().0;
                let spread = self.index % (OPENING_SPREAD.as_millis() as u64);
                Duration::from_millis(u64::try_from(left).unwrap_or(0) + spread).min(MAX_WAIT)
            }
            _ => {
                let ahead = view.ahead.unwrap_or(0) + 1;
                let per_s = view.admit_per_s.unwrap_or(self.room.admit_per_s).max(1);
                let turn = Duration::from_secs_f64(ahead as f64 / f64::from(per_s));
                turn.min(MAX_POLL_PAUSE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_place_refused_after_a_later_one_was_admitted_is_caught() {
        let mut seen = LineSeen {
            permits: vec![(0, ms(100)), (1, ms(200)), (5, ms(600))],
            refusals: vec![(3, ms(300)), (6, ms(650))],
            ..LineSeen::default()
        };
        assert!(
            seen.out_of_order(ms(10)).is_empty(),
            "3 was refused before 5 was admitted, 6 is behind 5"
        );
        seen.refusals.extend([(2, ms(700)), (4, ms(900))]);
        let broken = seen.out_of_order(ms(10));
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].contains("place 2"), "{broken:?}");
        // Within the slack it is clocks, not order.
        assert!(seen.out_of_order(ms(400)).is_empty());
    }
}
