//! The waiting room's routes ([`crate::line`]): joining an event's line, watching one's place,
//! and exchanging an admitted place for a permit to buy.
//!
//! - `GET /events/{id}/line/challenge` (a buyer session): a proof-of-work challenge for this
//!   visitor, when the room asks one.
//! - `POST /events/{id}/line` (a buyer session, `{"challenge","solution"}` when the room asks a
//!   proof of work): joins; 201 with the queue token and the view.
//! - `GET /events/{id}/line?token=T`: the token's view (before the opening, waiting with the
//!   place, those ahead and an estimated wait, or admitted).
//! - `POST /events/{id}/permits` `{"token"}` (the same buyer's session): an admitted visitor's
//!   permit, valid `ApiConfig::permit_ttl`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::Buyer;
use super::body::{body_bytes, parse_json};
use super::error::AppError;
use super::state::ApiState;
use crate::access::{AccessError, unix_now};
use crate::domain::{Event, EventId, LinePace, SaleState, UnixMillis, WaitingRoom};
use crate::line::{
    Line, LineError, LineOrder, MAX_PRE_QUEUE, Permit, QueueTicket, Turn, proof, turn,
};
use crate::metrics::ResultLabels;
use crate::queue::PurchaseQueue;
use crate::store::{Store, StoreError};

/// How long a queue token stays valid after its join: a sale's day.
const TICKET_TTL_S: i64 = 24 * 3600;

/// What a visitor sees of their place.
#[derive(Debug, Serialize)]
struct LineView {
    /// `before_open`, `waiting` or `admitted`.
    state: &'static str,
    opens_at: UnixMillis,
    admit_per_s: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    place: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ahead: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_wait_s: Option<u64>,
}

/// `GET /events/{id}/line` query.
#[derive(Debug, Deserialize)]
pub(super) struct TokenQuery {
    token: String,
}

/// `POST /events/{id}/line` body (empty, or `{}`, when the room asks no proof of work).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    solution: Option<u64>,
}

/// The answer to `GET /events/{id}/line/challenge`.
#[derive(Debug, Serialize)]
struct ChallengeView {
    challenge: String,
    bits: u8,
    expires_at: UnixMillis,
}

/// `POST /events/{id}/permits` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermitBody {
    token: String,
}

/// The 201 answer to `POST /events/{id}/permits`.
#[derive(Debug, Serialize)]
struct PermitView {
    permit: String,
    expires_at: UnixMillis,
}

/// An event's waiting room and its opening time, or why it has none.
fn room_of(event: &Event) -> Result<(&WaitingRoom, UnixMillis), AppError> {
    match (&event.waiting_room, event.window.opens_at()) {
        (Some(room), Some(opens_at)) => Ok((room, opens_at)),
        _ => Err(LineError::NoWaitingRoom.into()),
    }
}

impl<S: Store, Q: PurchaseQueue> ApiState<S, Q> {
    /// Counts a refusal of the line's and turns it into the request's error.
    pub(super) fn line_refused(&self, e: LineError) -> AppError {
        self.metrics
            .line_refused
            .get_or_create(&crate::metrics::ReasonLabels { reason: e.as_str() })
            .inc();
        e.into()
    }

    /// The order of `event`'s line, opening it (sealing the pre-queue) if this is the first
    /// request after `opens_at` anywhere: the seal's offset goes to the store, where the first
    /// instance's wins, and every instance orders the line from what the store holds.
    async fn line_order(
        &self,
        event: &Event,
        room: &WaitingRoom,
        line: &Line,
    ) -> Result<Arc<LineOrder>, AppError> {
        let order = line
            .order
            .get_or_try_init(|| async {
                // The cached event may predate the seal: read the store's.
                let recorded = self
                    .bounded(self.store.event(event.id))
                    .await?
                    .and_then(|e| e.waiting_room)
                    .and_then(|r| r.sealed_size);
                let size = match recorded {
                    Some(size) => size,
                    None => {
                        let sealed = tokio::time::timeout(
                            self.config.enqueue_timeout,
                            self.line_log.seal(event.id),
                        )
                        .await
                        .map_err(|_| AppError::QueueTimeout(self.config.enqueue_timeout))??;
                        self.bounded(self.store.seal_line(event.id, sealed)).await?
                    }
                };
                if size > MAX_PRE_QUEUE {
                    return Err(LineError::TooLarge.into());
                }
                let seed = room.seed.clone();
                let order = tokio::task::spawn_blocking(move || LineOrder::new(&seed, size))
                    .await
                    .map_err(|e| {
                        AppError::Store(StoreError::Unavailable {
                            reason: format!("ordering the line: {e}"),
                        })
                    })?;
                tracing::info!(event = %event.id, pre_queue = size, "line opened");
                Ok::<_, AppError>(Arc::new(order))
            })
            .await?;
        Ok(Arc::clone(order))
    }

    /// The point of `line`'s admission curve to admit by: read from the store the first time
    /// an auto-paced line is served here, then kept fresh by the pacer ([`Self::run_pacer`]).
    async fn pace(&self, event: EventId, line: &Line) -> Result<LinePace, AppError> {
        if let Some(pace) = line.pace() {
            return Ok(pace);
        }
        let pace = self
            .bounded(self.store.line_pace(event))
            .await?
            .unwrap_or_else(|| line.opening());
        line.set_pace(pace);
        Ok(pace)
    }

    /// Where `ticket`'s visitor stands now.
    async fn view(
        &self,
        event: &Event,
        ticket: &QueueTicket,
        token: Option<String>,
    ) -> Result<(LineView, Turn), AppError> {
        let (room, opens_at) = room_of(event)?;
        let now = UnixMillis::now();
        let line = self.lines.line(event.id, opens_at, room);
        line.observe(ticket.seq);
        let mut view = LineView {
            state: "before_open",
            opens_at,
            admit_per_s: room.admit_per_s,
            token,
            place: None,
            ahead: None,
            estimated_wait_s: None,
        };
        if now < opens_at {
            let wait = Turn::Waiting {
                ahead: u64::MAX,
                wait_s: u64::try_from((opens_at.0 - now.0) / 1000).unwrap_or(0),
            };
            return Ok((view, wait));
        }
        let order = self.line_order(event, room, &line).await?;
        let pace = self.pace(event.id, &line).await?;
        view.admit_per_s = pace.rate_at(now);
        // A signed ticket never names the seal's offset (the log answered it to a join).
        let place = order.place(ticket.seq).ok_or_else(|| {
            AppError::Store(StoreError::Corrupt {
                what: format!("a queue ticket of event {} names the seal", event.id),
            })
        })?;
        let now_turn = turn(place, now, &pace);
        view.place = Some(place);
        match now_turn {
            Turn::Admitted => view.state = "admitted",
            Turn::Waiting { ahead, wait_s } => {
                view.state = "waiting";
                view.ahead = Some(ahead);
                view.estimated_wait_s = Some(wait_s);
            }
        }
        Ok((view, now_turn))
    }

    /// The ticket a request's token holds for `event`, or the refusal, counted.
    fn ticket(&self, token: &str, event: EventId) -> Result<QueueTicket, AppError> {
        QueueTicket::open(&self.access.config().keys, token, event, unix_now())
            .map_err(|e| self.line_refused(e))
    }
}

pub(super) async fn challenge<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    Path(id): Path<String>,
    Buyer(buyer): Buyer,
) -> Result<Response, AppError> {
    let event_id: EventId = id.parse().map_err(|_| AppError::EventNotFound)?;
    let (event, _) = st.known_event(event_id).await?;
    let (room, _) = room_of(&event)?;
    let nonce = crate::access::random_hex::<16>().ok_or(AccessError::NoRandomness)?;
    let expires_at = unix_now().saturating_add(proof::CHALLENGE_TTL_S);
    let challenge = proof::Challenge {
        event: event_id,
        visitor: buyer,
        nonce,
    }
    .seal(&st.access.config().keys, expires_at);
    Ok(Json(ChallengeView {
        challenge,
        bits: room.proof_of_work_bits,
        expires_at: UnixMillis(expires_at.saturating_mul(1000)),
    })
    .into_response())
}

pub(super) async fn join<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    Path(id): Path<String>,
    Buyer(buyer): Buyer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let event_id: EventId = id.parse().map_err(|_| AppError::EventNotFound)?;
    let body = body_bytes(body, st.config.max_body_bytes)?;
    let raw: JoinBody = if body.is_empty() {
        JoinBody::default()
    } else {
        parse_json(&body)?
    };
    let (event, _) = st.known_event(event_id).await?;
    let (room, opens_at) = room_of(&event)?;
    if room.proof_of_work_bits > 0 {
        let (Some(challenge), Some(solution)) = (raw.challenge.as_deref(), raw.solution) else {
            return Err(st.line_refused(LineError::ProofRequired {
                bits: room.proof_of_work_bits,
            }));
        };
        proof::check(
            &st.access.config().keys,
            challenge,
            solution,
            room.proof_of_work_bits,
            event_id,
            &buyer,
            unix_now(),
        )
        .map_err(|e| st.line_refused(e))?;
    }
    match event.window.state_at(UnixMillis::now()) {
        SaleState::NotOpen { .. } => {}
        // Open: the seal goes before this join in the log (if no instance put it there yet),
        // so a visitor arriving after the opening always stands behind the pre-queue.
        SaleState::Open => {
            let line = st.lines.line(event_id, opens_at, room);
            st.line_order(&event, room, &line).await?;
        }
        SaleState::Closed { closes_at } => return Err(AppError::SaleClosed { closes_at }),
    }
    let joined_at = UnixMillis::now();
    let seq = tokio::time::timeout(
        st.config.enqueue_timeout,
        st.line_log.join(event_id, &buyer, joined_at.0),
    )
    .await
    .map_err(|_| AppError::QueueTimeout(st.config.enqueue_timeout))??;
    st.metrics.line_joins.inc();
    let ticket = QueueTicket {
        event: event_id,
        visitor: buyer,
        seq,
        joined_at_ms: joined_at.0,
    };
    let token = ticket.seal(&st.access.config().keys, unix_now() + TICKET_TTL_S);
    let (view, _) = st.view(&event, &ticket, Some(token)).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub(super) async fn status<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    Path(id): Path<String>,
    Query(TokenQuery { token }): Query<TokenQuery>,
) -> Result<Response, AppError> {
    let event_id: EventId = id.parse().map_err(|_| AppError::EventNotFound)?;
    let ticket = st.ticket(&token, event_id)?;
    let (event, _) = st.known_event(event_id).await?;
    let (view, _) = st.view(&event, &ticket, None).await?;
    Ok(Json(view).into_response())
}

pub(super) async fn permit<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    Path(id): Path<String>,
    Buyer(buyer): Buyer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let event_id: EventId = id.parse().map_err(|_| AppError::EventNotFound)?;
    let body = body_bytes(body, st.config.max_body_bytes)?;
    let raw: PermitBody = parse_json(&body)?;
    let ticket = st.ticket(&raw.token, event_id)?;
    if ticket.visitor != buyer {
        return Err(st.line_refused(LineError::NotYours));
    }
    let (event, _) = st.known_event(event_id).await?;
    let (_, opens_at) = room_of(&event)?;
    match st.view(&event, &ticket, None).await? {
        (_, Turn::Admitted) => {}
        (view, Turn::Waiting { ahead, .. }) => {
            let refusal = match view.place {
                Some(place) => LineError::NotAdmitted { place, ahead },
                None => LineError::NotOpenYet,
            };
            return Err(st.line_refused(refusal));
        }
    }
    let now = unix_now();
    let ttl = i64::try_from(st.config.permit_ttl.as_secs()).unwrap_or(i64::MAX);
    let expires_at = now.saturating_add(ttl);
    let permit = Permit {
        event: event_id,
        visitor: buyer,
        seq: ticket.seq,
    };
    let token = permit.seal(&st.access.config().keys, expires_at);
    st.metrics
        .line_permits
        .get_or_create(&ResultLabels { result: "issued" })
        .inc();
    // The wait: from joining (or the opening, for the pre-queue) to the permit.
    let waited_from = ticket.joined_at_ms.max(opens_at.0);
    let waited_ms = UnixMillis::now().0.saturating_sub(waited_from).max(0);
    st.metrics.line_wait.observe(waited_ms as f64 / 1000.0);
    Ok((
        StatusCode::CREATED,
        Json(PermitView {
            permit: token,
            expires_at: UnixMillis(expires_at.saturating_mul(1000)),
        }),
    )
        .into_response())
}

impl<S: Store, Q: PurchaseQueue> ApiState<S, Q> {
    /// Sets the gauges read on demand, before each scrape: `ticket_line_waiting`,
    /// `ticket_line_admitted` and `ticket_line_admit_per_s`.
    pub fn refresh_gauges(&self) {
        let now = UnixMillis::now();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics
            .line_waiting
            .set(gauge(self.lines.waiting(now)));
        let (admitted, per_s) = self.lines.admitting(now);
        self.metrics.line_admitted.set(gauge(admitted));
        self.metrics.line_admit_per_s.set(gauge(per_s));
    }
}
