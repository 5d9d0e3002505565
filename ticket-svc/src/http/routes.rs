//! The handlers and their JSON shapes (docs/DESIGN.md, "The ticket API").

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::{Buyer, Organizer};
use super::body::{body_bytes, parse_json};
use super::error::AppError;
use super::state::ApiState;
use crate::access::unix_now;
use crate::domain::{
    Event, EventId, EventSpec, IdempotencyKey, Pacing, Position, Purchase, PurchaseId, PurchaseJob,
    PurchaseRequest, QueuedJob, SaleState, SaleWindow, UnixMillis, WaitingRoom,
};
use crate::line::{LineError, Permit, purchase_id_for_permit};
use crate::metrics::ResultLabels;
use crate::queue::PurchaseQueue;
use crate::store::Store;

/// `POST /events` body. Without `opens_at` an event is on sale from its creation; without
/// `closes_at`, until it sells out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEventBody {
    name: String,
    tickets: i64,
    max_per_buyer: i64,
    #[serde(default)]
    opens_at: Option<UnixMillis>,
    #[serde(default)]
    closes_at: Option<UnixMillis>,
    #[serde(default)]
    waiting_room: Option<WaitingRoomBody>,
}

/// `POST /events`' `waiting_room`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitingRoomBody {
    admit_per_s: i64,
    #[serde(default)]
    proof_of_work_bits: i64,
    #[serde(default)]
    pace: Option<String>,
}

/// An event's waiting room as it is shown (never its seed).
#[derive(Debug, Serialize)]
struct WaitingRoomView {
    admit_per_s: u32,
    proof_of_work_bits: u8,
    pace: Pacing,
}

/// `POST /events/{id}/purchases` body. The buyer is the session's; `buyer` is accepted only to
/// tell a client of the old API so. `permit`: an event with a waiting room sells only to
/// admitted visitors, one purchase per permit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePurchaseBody {
    quantity: i64,
    #[serde(default)]
    permit: Option<String>,
    #[serde(default)]
    buyer: Option<serde::de::IgnoredAny>,
}

/// An event as `POST /events` and `GET /events/{id}` show it.
#[derive(Debug, Serialize)]
struct EventView<'a> {
    id: EventId,
    name: &'a str,
    tickets: u32,
    max_per_buyer: u32,
    sold: u32,
    remaining: u32,
    opens_at: Option<UnixMillis>,
    closes_at: Option<UnixMillis>,
    waiting_room: Option<WaitingRoomView>,
}

impl<'a> From<&'a Event> for EventView<'a> {
    fn from(e: &'a Event) -> Self {
        Self {
            id: e.id,
            name: &e.name,
            tickets: e.tickets,
            max_per_buyer: e.max_per_buyer,
            sold: e.sold,
            remaining: e.remaining(),
            opens_at: e.window.opens_at(),
            closes_at: e.window.closes_at(),
            waiting_room: e.waiting_room.as_ref().map(|r| WaitingRoomView {
                admit_per_s: r.admit_per_s,
                proof_of_work_bits: r.proof_of_work_bits,
                pace: r.pacing,
            }),
        }
    }
}

/// The 202 answer to a purchase.
#[derive(Debug, Serialize)]
struct Accepted<'a> {
    purchase_id: PurchaseId,
    status: &'static str,
    status_url: &'a str,
    position: Position,
}

/// `GET /purchases/{id}`.
#[derive(Debug, Serialize)]
struct PurchaseView<'a> {
    purchase_id: PurchaseId,
    event_id: EventId,
    buyer: &'a str,
    quantity: u32,
    position: Position,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl<'a> From<&'a Purchase> for PurchaseView<'a> {
    fn from(p: &'a Purchase) -> Self {
        Self {
            purchase_id: p.id,
            event_id: p.event_id,
            buyer: &p.buyer,
            quantity: p.quantity,
            position: p.position,
            status: p.status.as_str(),
            reason: p.status.reason().map(|r| r.as_str()),
        }
    }
}

fn status_url(id: PurchaseId) -> String {
    format!("/purchases/{id}")
}

pub(super) async fn create_event<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    _: Organizer,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = body_bytes(body, st.config.max_body_bytes)?;
    let raw: CreateEventBody = parse_json(&body)?;
    let mut spec = EventSpec::new(&raw.name, raw.tickets, raw.max_per_buyer)?
        .with_window(SaleWindow::new(raw.opens_at, raw.closes_at)?);
    if let Some(room) = raw.waiting_room {
        let pacing = room
            .pace
            .as_deref()
            .map_or(Ok(Pacing::Fixed), Pacing::parse)?;
        spec = spec.with_waiting_room(
            WaitingRoom::new(room.admit_per_s)?
                .with_proof_of_work(room.proof_of_work_bits)?
                .with_pacing(pacing),
        )?;
    }
    let event = st.bounded(st.store.create_event(&spec)).await?;
    let mut resp = (StatusCode::CREATED, Json(EventView::from(&event))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/events/{}", event.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

pub(super) async fn show_event<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id: EventId = id.parse().map_err(|_| AppError::EventNotFound)?;
    let event = st
        .bounded(st.store.event(id))
        .await?
        .ok_or(AppError::EventNotFound)?;
    Ok(Json(EventView::from(&event)).into_response())
}

/// The request's `Idempotency-Key` header, if any: taken alone, where the `HeaderMap` extractor
/// would clone every header of every purchase.
pub(super) struct IdempotencyKeyHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get("idempotency-key").cloned()))
    }
}

pub(super) async fn create_purchase<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    Path(id): Path<String>,
    Buyer(buyer): Buyer,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let event_id: EventId = id.parse().map_err(|_| AppError::EventNotFound)?;
    let body = body_bytes(body, st.config.max_body_bytes)?;
    let raw: CreatePurchaseBody = parse_json(&body)?;
    if raw.buyer.is_some() {
        return Err(AppError::BuyerInBody);
    }
    let (event, shard) = st.known_event(event_id).await?;
    // The API's clock decides: before `opens_at` or from `closes_at` on, nothing is queued.
    match event.window.state_at(UnixMillis::now()) {
        SaleState::Open => {}
        SaleState::NotOpen { opens_at } => return Err(AppError::SaleNotOpen { opens_at }),
        SaleState::Closed { closes_at } => return Err(AppError::SaleClosed { closes_at }),
    }
    // Under a waiting room, only with a permit, and the permit names the purchase: sent twice,
    // it is the same purchase, answered with its first position.
    let permit = match (&event.waiting_room, raw.permit.as_deref()) {
        (None, _) => None,
        (Some(_), None) => return Err(st.line_refused(LineError::PermitRequired)),
        (Some(_), Some(token)) => Some(
            Permit::open(
                &st.access.config().keys,
                token,
                event_id,
                &buyer,
                unix_now(),
            )
            .map_err(|e| st.line_refused(e))?,
        ),
    };
    let request = PurchaseRequest::new(buyer.as_str(), raw.quantity, &event)?;
    let key = match key.as_ref() {
        None => None,
        Some(v) => {
            let text = v.to_str().map_err(|_| AppError::BadHeader {
                name: "Idempotency-Key",
                problem: "not visible ASCII".into(),
            })?;
            Some(IdempotencyKey::new(text)?)
        }
    };

    // With a key, the purchase id is derived from (event, buyer, key): every instance names the
    // same purchase, the queue's dedup answers a retry with the first position, and the store
    // decides a purchase id once. Either id carries the event's shard (none for shard 0), so
    // `GET /purchases/{id}` finds its database from the id alone.
    let purchase_id = match (&permit, &key) {
        (Some(p), _) => purchase_id_for_permit(p),
        (None, Some(k)) => PurchaseId::for_idempotency_key(event_id, &request.buyer, k),
        (None, None) => PurchaseId::new(),
    }
    .on_shard(shard);
    let job = PurchaseJob {
        purchase_id,
        event_id,
        buyer: request.buyer,
        quantity: request.quantity,
    };

    let started = Instant::now();
    let enqueued = tokio::time::timeout(st.config.enqueue_timeout, st.queue.enqueue(&job)).await;
    st.metrics
        .enqueue_duration
        .observe(started.elapsed().as_secs_f64());
    let enqueued = match enqueued {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            st.metrics.enqueue_failures.inc();
            return Err(AppError::QueueUnavailable(e));
        }
        Err(_) => {
            st.metrics.enqueue_failures.inc();
            return Err(AppError::QueueTimeout(st.config.enqueue_timeout));
        }
    };

    let mut queued = QueuedJob {
        job,
        position: enqueued.position,
    };
    // The job is durably queued: from here on the answer is 202. The position on record wins: a
    // key retried after the queue's dedup window was appended again, but its place in line is
    // the first one. A failed pending record only means `GET /purchases/{id}` shows 404 until a
    // worker records the decision.
    match st.bounded(st.store.record_pending(&queued)).await {
        Ok(first) => queued.position = first,
        Err(e) => {
            tracing::warn!(error = %e, purchase_id = %queued.job.purchase_id, "could not record pending purchase");
        }
    }
    st.metrics.purchases_accepted.inc();
    if enqueued.is_duplicate {
        st.metrics.purchases_deduplicated.inc();
    } else if permit.is_some() {
        st.metrics
            .line_permits
            .get_or_create(&ResultLabels { result: "used" })
            .inc();
    }
    let id = queued.job.purchase_id;
    let url = status_url(id);
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            purchase_id: id,
            status: "pending",
            status_url: &url,
            position: queued.position,
        }),
    )
        .into_response();
    if let Ok(loc) = HeaderValue::try_from(url) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

pub(super) async fn show_purchase<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let id: PurchaseId = id.parse().map_err(|_| AppError::PurchaseNotFound)?;
    let purchase = st
        .bounded(st.store.purchase(id))
        .await?
        .ok_or(AppError::PurchaseNotFound)?;
    Ok(Json(PurchaseView::from(&purchase)).into_response())
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

pub(super) async fn healthz<S: Store, Q: PurchaseQueue>(
    State(st): State<ApiState<S, Q>>,
) -> Result<Response, AppError> {
    let limit = st.config.ready_timeout;
    match tokio::time::timeout(limit, st.store.check_ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(AppError::NotReady(format!("store: {e}"))),
        Err(_) => {
            return Err(AppError::NotReady(format!(
                "store did not answer within {limit:?}"
            )));
        }
    }
    match tokio::time::timeout(limit, st.queue.check_ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(AppError::NotReady(format!("queue: {e}"))),
        Err(_) => {
            return Err(AppError::NotReady(format!(
                "queue did not answer within {limit:?}"
            )));
        }
    }
    Ok(Json(Health { status: "ok" }).into_response())
}

pub(super) async fn not_found() -> AppError {
    AppError::RouteNotFound
}

pub(super) async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
