//! The crowd's mailbox: where an API's webhook login sender delivers login codes
//! (`api --login-sender http://MAILBOX/codes`), for the crowd's buyers to read, as a test
//! mail server (MailHog, Mailpit) does for people. One runs inside a `rush` (`--mailbox-listen`)
//! or on its own (`ticket-svc mailbox`) for several crowds at once, which then read their codes
//! from it (`rush --mailbox URL`).
//!
//! - `POST /codes` (any path but `/codes/...`) `{"email","code",...}`: holds the code for its
//!   address (the newest replaces an older one), or hands it to a reader waiting for it; 204.
//! - `GET /codes/{email}?wait_ms=N`: takes the address's code, waiting up to N ms (at most
//!   10,000) for one to arrive; 200 with the code as text, or 404.
//!
//! Codes not read within 10 minutes (a login code's life) are dropped; at most a million are
//! held at once (then a delivery is refused with 503, which the API answers its login with).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The largest webhook body read.
const MAX_WEBHOOK_BYTES: usize = 4 * 1024;
/// How long an unread code is held.
const CODE_LIFE: Duration = Duration::from_secs(600);
/// The most codes (and waiting readers) held at once.
const MAX_HELD: usize = 1_000_000;
/// The longest a `GET /codes/{email}` waits.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// An address's slot: a code waiting for its reader, or a reader waiting for its code.
enum Slot {
    Code { code: String, at: Instant },
    Reader(oneshot::Sender<String>),
}

type Slots = Arc<Mutex<HashMap<String, Slot>>>;

/// A running mailbox.
pub struct Mailbox {
    addr: SocketAddr,
    slots: Slots,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Mailbox {
    /// A mailbox listening on `addr` (port 0: a free port).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let slots: Slots = Arc::default();
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept(
            listener,
            Arc::clone(&slots),
            stop.clone(),
            tracker.clone(),
        ));
        Ok(Self {
            addr,
            slots,
            stop,
            tracker,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give the APIs' `--login-sender`.
    pub fn url(&self) -> String {
        format!("http://{}/codes", self.addr)
    }

    /// Takes `email`'s code, waiting up to `wait` for one to arrive.
    pub async fn take(&self, email: &str, wait: Duration) -> Option<String> {
        take(&self.slots, email, wait).await
    }

    /// Stops listening and waits for the requests in flight.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn lock(slots: &Slots) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
    slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn take(slots: &Slots, email: &str, wait: Duration) -> Option<String> {
    let rx = {
        let mut held = lock(slots);
        if let Some(Slot::Code { code, .. }) = held.remove(email) {
            return Some(code);
        }
        let (tx, rx) = oneshot::channel();
        held.insert(email.to_owned(), Slot::Reader(tx));
        rx
    };
    let code = tokio::time::timeout(wait, rx)
        .await
        .ok()
        .and_then(Result::ok);
    if code.is_none() {
        // Gone unanswered: free the slot, unless a code arrived since.
        let mut held = lock(slots);
        if matches!(held.get(email), Some(Slot::Reader(tx)) if tx.is_closed()) {
            held.remove(email);
        }
    }
    code
}

/// Holds a delivered code for its address, or hands it to the reader waiting for it.
fn deliver(slots: &Slots, email: String, code: String) -> StatusCode {
    let mut held = lock(slots);
    let code = match held.remove(&email) {
        Some(Slot::Reader(tx)) => match tx.send(code) {
            Ok(()) => return StatusCode::NO_CONTENT,
            Err(code) => code,
        },
        _ => code,
    };
    if held.len() >= MAX_HELD {
        let now = Instant::now();
        held.retain(|_, slot| match slot {
            Slot::Code { at, .. } => now.duration_since(*at) < CODE_LIFE,
            Slot::Reader(tx) => !tx.is_closed(),
        });
        if held.len() >= MAX_HELD {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    held.insert(
        email,
        Slot::Code {
            code,
            at: Instant::now(),
        },
    );
    StatusCode::NO_CONTENT
}

async fn accept(
    listener: TcpListener,
    slots: Slots,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "mailbox accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let slots = Arc::clone(&slots);
        let stop = stop.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let slots = Arc::clone(&slots);
                async move {
                    let (status, body) = answer(req, &slots).await;
                    hyper::Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, "text/plain")
                        .body(Full::new(body))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
        });
    }
}

/// A webhook's body (other fields ignored).
#[derive(serde::Deserialize)]
struct Delivered {
    email: String,
    code: String,
}

async fn answer(req: hyper::Request<hyper::body::Incoming>, slots: &Slots) -> (StatusCode, Bytes) {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET {
        let Some(email) = path.strip_prefix("/codes/").filter(|e| !e.is_empty()) else {
            return (StatusCode::NOT_FOUND, Bytes::new());
        };
        let wait = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("wait_ms=")))
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_millis)
            .min(MAX_WAIT);
        return match take(slots, email, wait).await {
            Some(code) => (StatusCode::OK, Bytes::from(code)),
            None => (StatusCode::NOT_FOUND, Bytes::new()),
        };
    }
    if req.method() != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
    }
    let Ok(body) = Limited::new(req.into_body(), MAX_WEBHOOK_BYTES)
        .collect()
        .await
    else {
        return (StatusCode::BAD_REQUEST, Bytes::new());
    };
    match serde_json::from_slice::<Delivered>(&body.to_bytes()) {
        Ok(d) => (deliver(slots, d.email, d.code), Bytes::new()),
        Err(_) => (StatusCode::BAD_REQUEST, Bytes::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_code_waits_for_its_reader_and_a_reader_for_its_code() {
        let slots = Slots::default();
        // Delivered first, read after.
        assert_eq!(
            deliver(&slots, "a@x.org".into(), "OLD".into()),
            StatusCode::NO_CONTENT
        );
        deliver(&slots, "a@x.org".into(), "NEW".into());
        assert_eq!(
            take(&slots, "a@x.org", Duration::ZERO).await.as_deref(),
            Some("NEW"),
            "the newest code wins"
        );
        assert_eq!(
            take(&slots, "a@x.org", Duration::ZERO).await,
            None,
            "taken once"
        );
        // Read first, delivered while waiting.
        let reader = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { take(&slots, "b@x.org", Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        deliver(&slots, "b@x.org".into(), "B".into());
        assert_eq!(reader.await.unwrap().as_deref(), Some("B"));
        assert!(lock(&slots).is_empty());
    }

    #[tokio::test]
    async fn over_http_a_delivered_code_is_read_once() {
        use ticket_svc::testing::{call, get};
        let m = Mailbox::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let addr = m.addr();
        let post = |body: &'static str| call(addr, Method::POST, "/codes", &[], body);
        let delivered =
            post(r#"{"email":"c@x.org","code":"C0DE","expires_at":"2026-12-07T00:00:00.000Z"}"#)
                .await;
        assert_eq!(delivered.status, StatusCode::NO_CONTENT);
        let got = get(addr, "/codes/c@x.org?wait_ms=100").await;
        assert_eq!((got.status, got.text.as_str()), (StatusCode::OK, "C0DE"));
        let again = get(addr, "/codes/c@x.org?wait_ms=50").await;
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        assert_eq!(post("{}").await.status, StatusCode::BAD_REQUEST);
        m.stop().await;
    }
}
