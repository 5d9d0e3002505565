//! The crowd's identities, made through the API as a buyer makes theirs: each buyer asks for a
//! login code (`POST /login`), reads it from the crowd's [`Mailbox`] (the API's webhook login
//! sender delivers it there, `api --login-sender http://MAILBOX/codes`), and exchanges it for a
//! session (`POST /sessions`). Done before the rush, as buyers log in before a sale opens.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::RushConfig;
use super::mailbox::Mailbox;
use super::target::{Route, Target, is_failure};

/// How long a buyer waits for their code to arrive.
const CODE_WAIT: Duration = Duration::from_secs(5);
/// Logins a buyer tries before giving up.
const LOGIN_TRIES: u32 = 3;

/// Where the crowd reads its login codes: a [`Mailbox`] of its own, or a mailbox elsewhere
/// (`ticket-svc mailbox`, shared by several crowds) read over HTTP.
#[derive(Clone)]
pub enum Codes {
    /// This process's mailbox.
    Local(Arc<Mailbox>),
    /// A mailbox's base URL.
    Remote(Target),
}

impl From<Arc<Mailbox>> for Codes {
    fn from(m: Arc<Mailbox>) -> Self {
        Self::Local(m)
    }
}

impl Codes {
    /// `email`'s newest code, waiting up to [`CODE_WAIT`] for it.
    async fn take(&self, route: &mut Option<Route>, email: &str) -> Result<String, String> {
        match self {
            Self::Local(m) => m.take(email, CODE_WAIT).await,
            Self::Remote(target) => {
                let route = route.get_or_insert_with(|| {
                    Route::new(std::slice::from_ref(target), 0, CODE_WAIT * 2, 2)
                });
                let wait = CODE_WAIT.as_millis();
                match route.get(&format!("/codes/{email}?wait_ms={wait}")).await {
                    Ok((StatusCode::OK, code)) => String::from_utf8(code.to_vec()).ok(),
                    Ok(_) => None,
                    Err(e) => return Err(format!("the mailbox: {e}")),
                }
            }
        }
        .ok_or_else(|| format!("no code arrived within {CODE_WAIT:?}"))
    }
}

/// A buyer's session, as the crowd sends it.
#[derive(Debug, Clone)]
pub struct Session {
    /// `Bearer TOKEN`.
    pub authorization: HeaderValue,
    /// The buyer id the API knows them by.
    pub buyer: String,
}

/// The login phase's outcome.
#[derive(Debug, Default)]
pub struct Logins {
    /// Buyer `i`'s session (`None`: its login failed every try).
    pub sessions: Vec<Option<Session>>,
    /// Buyers whose login failed.
    pub failed: u64,
    /// How long the phase took.
    pub elapsed: Duration,
}

/// The address of buyer `i` of a crowd seeded `seed`.
pub(super) fn email_of(seed: u64, i: u64) -> String {
    format!("buyer-{seed}-{i}@crowd.example")
}

/// Logs every buyer in, `config.concurrency` at a time.
pub async fn log_in_all(
    config: &RushConfig,
    codes: &Codes,
    shutdown: &CancellationToken,
) -> Logins {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let n = config
        .concurrency
        .min(usize::try_from(config.buyers).unwrap_or(usize::MAX));
    let mut slots = JoinSet::new();
    for k in 0..n {
        let mut route = Route::new(&config.targets, k, config.request_timeout, config.resends);
        let (next, codes, stop) = (Arc::clone(&next), codes.clone(), shutdown.clone());
        let (buyers, seed) = (config.buyers, config.seed);
        slots.spawn(async move {
            let mut mine = Vec::new();
            let mut mailbox_route = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= buyers || stop.is_cancelled() {
                    return mine;
                }
                let email = email_of(seed, i);
                let mut session = None;
                for _ in 0..LOGIN_TRIES {
                    match log_in(&mut route, &codes, &mut mailbox_route, &email).await {
                        Ok(s) => {
                            session = Some(s);
                            break;
                        }
                        Err(e) => tracing::debug!(%email, error = %e, "login failed"),
                    }
                }
                mine.push((i, session));
            }
        });
    }
    let mut out = Logins {
        sessions: vec![None; usize::try_from(config.buyers).unwrap_or(0)],
        ..Logins::default()
    };
    while let Some(done) = slots.join_next().await {
        for (i, session) in done.unwrap_or_default() {
            if session.is_none() {
                out.failed += 1;
            }
            if let Some(slot) = usize::try_from(i)
                .ok()
                .and_then(|i| out.sessions.get_mut(i))
            {
                *slot = session;
            }
        }
    }
    out.elapsed = started.elapsed();
    out
}

/// One login: ask for a code, read it from the mailbox, exchange it for a session.
async fn log_in(
    route: &mut Route,
    codes: &Codes,
    mailbox_route: &mut Option<Route>,
    email: &str,
) -> Result<Session, String> {
    let answer = post(
        route,
        "/login",
        &serde_json::json!({ "email": email }),
        StatusCode::ACCEPTED,
    )
    .await?;
    let login = json_field(&answer, "login")?;
    let code = codes.take(mailbox_route, email).await?;
    let answer = post(
        route,
        "/sessions",
        &serde_json::json!({ "login": login, "code": code }),
        StatusCode::CREATED,
    )
    .await?;
    let token = json_field(&answer, "session")?;
    Ok(Session {
        authorization: HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "a session that is not a header value".to_owned())?,
        buyer: json_field(&answer, "buyer")?,
    })
}

/// POSTs `body` as JSON to `path` (sent again after a failure: logging in twice is harmless),
/// expecting `expected`; the answer's body.
async fn post(
    route: &mut Route,
    path: &str,
    body: &serde_json::Value,
    expected: StatusCode,
) -> Result<Bytes, String> {
    const JSON: [(HeaderName, HeaderValue); 1] = [(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    let body = Bytes::from(body.to_string());
    let sent = route
        .send(
            &Method::POST,
            |p| format!("{p}{path}"),
            &JSON,
            &body,
            true,
            |_| {},
        )
        .await;
    let (status, answer) = answered(sent)?;
    if status != expected {
        return Err(format!("POST {path} answered {status}"));
    }
    Ok(answer)
}

fn answered(
    answer: Result<(StatusCode, Bytes), super::client::ClientError>,
) -> Result<(StatusCode, Bytes), String> {
    if is_failure(&answer) {
        return Err(match answer {
            Ok((s, _)) => format!("answered {s}"),
            Err(e) => e.to_string(),
        });
    }
    answer.map_err(|e| e.to_string())
}

fn json_field(body: &[u8], name: &str) -> Result<String, String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get(name).and_then(|f| f.as_str()).map(str::to_owned))
        .ok_or_else(|| format!("no {name} in the answer"))
}
