//! The crowd's event: putting it on sale through the API as an organizer would
//! ([`create_event`]), reading it (`GET /events/{id}`), and sampling its `sold` count during
//! the rush for the timeline.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use ticket_svc::domain::EventId;

use super::config::RushConfig;
use super::error::RushError;
use super::target::{Route, Target};
use super::timeline::{SoldSample, Timeline};
use super::waiting;

/// What the crowd reads of its event.
pub(super) struct EventInfo {
    pub(super) tickets: u32,
    pub(super) max_per_buyer: u32,
    pub(super) sold: u32,
    pub(super) room: Option<waiting::Room>,
}

/// The event as `GET /events/{id}` shows it through `route`.
pub(super) async fn read_event(route: &mut Route, event: EventId) -> Result<EventInfo, RushError> {
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
    let room = v.get("waiting_room").and_then(|r| {
        let admit_per_s = u32::try_from(r.get("admit_per_s")?.as_u64()?).ok()?;
        let proof_of_work_bits = r
            .get("proof_of_work_bits")
            .and_then(serde_json::Value::as_u64)
            .and_then(|b| u8::try_from(b).ok())
            .unwrap_or(0);
        Some(waiting::Room {
            admit_per_s,
            proof_of_work_bits,
        })
    });
    Ok(EventInfo {
        tickets: field("tickets")?,
        max_per_buyer: field("max_per_buyer")?,
        sold: field("sold")?,
        room,
    })
}

/// An event to put on sale through the API ([`create_event`]).
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// Its name.
    pub name: &'a str,
    /// Tickets for sale.
    pub tickets: u32,
    /// The most one buyer may hold.
    pub max_per_buyer: u32,
    /// When the sale opens (none: at once).
    pub opens_at: Option<ticket_svc::domain::UnixMillis>,
    /// A waiting room admitting this many a second (needs `opens_at`).
    pub admit_per_s: Option<u32>,
    /// The room's rate follows the workers from `admit_per_s` on (`"pace": "auto"`).
    pub auto_pace: bool,
}

impl<'a> NewEvent<'a> {
    /// `tickets` on sale at once, at most `max_per_buyer` each, no waiting room.
    pub fn new(name: &'a str, tickets: u32, max_per_buyer: u32) -> Self {
        Self {
            name,
            tickets,
            max_per_buyer,
            opens_at: None,
            admit_per_s: None,
            auto_pace: false,
        }
    }
}

/// Creates an event through the API with an organizer's `Authorization` value, as an
/// organizer's tool would: the crowd's sale goes through the same front door as everyone's.
///
/// # Errors
/// No answer, or an answer other than 201 with the event's id.
pub async fn create_event(
    targets: &[Target],
    organizer: &str,
    event: &NewEvent<'_>,
) -> Result<EventId, RushError> {
    let fail = |reason: String| RushError::CreateEvent(reason);
    let mut route = Route::new(
        targets,
        0,
        Duration::from_secs(10),
        RushConfig::DEFAULT_RESENDS,
    );
    let authorization =
        HeaderValue::from_str(organizer).map_err(|_| fail("a bad organizer token".into()))?;
    let headers = [
        (http::header::AUTHORIZATION, authorization),
        (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
    ];
    let mut body = serde_json::json!({
        "name": event.name, "tickets": event.tickets, "max_per_buyer": event.max_per_buyer
    });
    if let Some(opens_at) = event.opens_at {
        body["opens_at"] = opens_at.to_string().into();
    }
    if let Some(per_s) = event.admit_per_s {
        let pace = if event.auto_pace { "auto" } else { "fixed" };
        body["waiting_room"] = serde_json::json!({ "admit_per_s": per_s, "pace": pace });
    }
    // Not sent again: a second POST /events would make a second event.
    let (status, answer) = route
        .send(
            &Method::POST,
            |prefix| format!("{prefix}/events"),
            &headers,
            &Bytes::from(body.to_string()),
            false,
            |_| {},
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    if status != StatusCode::CREATED {
        return Err(fail(format!(
            "answered {status}: {}",
            String::from_utf8_lossy(&answer)
        )));
    }
    serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v.get("id").and_then(serde_json::Value::as_i64))
        .map(EventId)
        .ok_or_else(|| fail("no id in the answer".into()))
}

/// How often the event's `sold` is read: a few requests per second, so a sell-out that takes
/// a second still draws a curve.
const SOLD_SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The most `sold` samples one rush keeps (six hours at four a second).
const MAX_SOLD_SAMPLES: usize = Timeline::MAX_SECONDS * 4;

/// Reads the event's `sold` through the target every [`SOLD_SAMPLE_EVERY`] until `stop`.
pub(super) async fn sample_sold(
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
