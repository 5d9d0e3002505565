//! Where the crowd's requests go: the targets (a site's several addresses, as a buyer's browser
//! has them), and each slot's [`Route`] over them, which moves to the next target when one fails
//! and sends the request again there.
//!
//! A request is sent again only when that is safe: a `GET`, or a purchase with its
//! `Idempotency-Key` (the API names the purchase from the key, so a purchase sent twice is sold
//! once). A failure is no HTTP answer at all, or 502, 503 or 504: a proxy or a server that could
//! not serve the request now, which a browser's retry on another address gets past.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::client::{ClientError, Conn};
use super::error::RushError;

/// One address of the site.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path prefix (no trailing slash), usually empty.
    pub prefix: String,
}

impl Target {
    /// Parses and resolves `http://HOST:PORT[/PREFIX]` (TLS targets are not supported by the
    /// crowd's client).
    pub async fn resolve(url: &str) -> Result<Self, RushError> {
        let bad = |reason: &str| RushError::BadTarget {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// targets are supported"))?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("host resolves to nothing"))?;
        let prefix = prefix.trim_end_matches('/');
        Ok(Self {
            url: url.to_owned(),
            addr,
            host: authority.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            },
        })
    }

    /// Resolves each URL, in order.
    pub async fn resolve_all(urls: &[String]) -> Result<Vec<Self>, RushError> {
        let mut targets = Vec::with_capacity(urls.len());
        for url in urls {
            targets.push(Self::resolve(url).await?);
        }
        Ok(targets)
    }
}

/// The first pause before a request is sent again; it doubles with each failure of the same
/// request, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause before a request is sent again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The pause before the `n`th re-send (0-based) of a request.
fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << n.min(16))
        .min(MAX_BACKOFF)
}

/// Whether an answer is a failure a re-send on another target may get past.
pub fn is_failure(answer: &Result<(StatusCode, Bytes), ClientError>) -> bool {
    match answer {
        Err(_) => true,
        Ok((status, _)) => matches!(
            *status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
    }
}

/// One attempt of a request: when it was sent and what came back.
pub struct Attempt {
    /// When it went out.
    pub sent: tokio::time::Instant,
    /// The answer, or why there was none.
    pub answer: Result<(StatusCode, Bytes), ClientError>,
}

/// A slot's connections, one per target (each opened on first use): requests go to the current
/// target, and a failure moves the slot to the next one.
#[derive(Debug)]
pub struct Route {
    /// Each target's prefix and connection.
    conns: Vec<(String, Conn)>,
    /// The target requests go to now.
    at: usize,
    /// Re-sends allowed per request after a failure.
    resends: u32,
}

impl Route {
    /// A route over `targets` starting at `first` (modulo their number), each request sent again
    /// up to `resends` times after a failure.
    pub fn new(targets: &[Target], first: usize, timeout: Duration, resends: u32) -> Self {
        let conns = targets
            .iter()
            .map(|t| (t.prefix.clone(), Conn::new(t.addr, &t.host, timeout)))
            .collect::<Vec<_>>();
        let at = first % conns.len().max(1);
        Self { conns, at, resends }
    }

    /// The current target's path prefix.
    pub fn prefix(&self) -> &str {
        self.conns.get(self.at).map_or("", |(p, _)| p.as_str())
    }

    /// Which target requests go to now (an index into the targets given).
    pub fn current(&self) -> usize {
        self.at
    }

    /// Sends one request and, while it fails and `may_resend` and re-sends remain, pauses and
    /// sends it again on the next target. `path` makes the path from the target's prefix.
    /// `on_attempt` sees every attempt, the last one included; the last answer is returned.
    pub async fn send(
        &mut self,
        method: &Method,
        path: impl Fn(&str) -> String,
        headers: &[(HeaderName, HeaderValue)],
        body: &Bytes,
        may_resend: bool,
        mut on_attempt: impl FnMut(&Attempt),
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut n = 0;
        loop {
            let attempt = self.send_once(method, &path, headers, body).await;
            on_attempt(&attempt);
            if !(may_resend && n < self.resends && is_failure(&attempt.answer)) {
                return attempt.answer;
            }
            self.at = (self.at + 1) % self.conns.len().max(1);
            tokio::time::sleep(backoff(n)).await;
            n += 1;
        }
    }

    async fn send_once(
        &mut self,
        method: &Method,
        path: &impl Fn(&str) -> String,
        headers: &[(HeaderName, HeaderValue)],
        body: &Bytes,
    ) -> Attempt {
        let sent = tokio::time::Instant::now();
        let answer = match self.conns.get_mut(self.at) {
            Some((prefix, conn)) => {
                conn.send(method.clone(), &path(prefix), headers, body.clone())
                    .await
            }
            None => Err(ClientError::Request {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: "no target".into(),
            }),
        };
        Attempt { sent, answer }
    }

    /// `GET {prefix}{suffix}`, sent again on the next target after a failure.
    pub async fn get(&mut self, suffix: &str) -> Result<(StatusCode, Bytes), ClientError> {
        self.send(
            &Method::GET,
            |prefix| format!("{prefix}{suffix}"),
            &[],
            &Bytes::new(),
            true,
            |_| {},
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn targets_parse_or_say_why_not() {
        let t = Target::resolve("http://127.0.0.1:8080/api/").await.unwrap();
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.prefix, "/api");
        assert_eq!(t.host, "127.0.0.1:8080");
        assert!(Target::resolve("https://127.0.0.1:1").await.is_err());
        assert!(Target::resolve("http://").await.is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn failures_are_no_answer_and_the_gateway_statuses() {
        let with = |s: StatusCode| Ok((s, Bytes::new()));
        assert!(is_failure(&with(StatusCode::BAD_GATEWAY)));
        assert!(is_failure(&with(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(is_failure(&with(StatusCode::GATEWAY_TIMEOUT)));
        assert!(!is_failure(&with(StatusCode::ACCEPTED)));
        assert!(!is_failure(&with(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(!is_failure(&with(StatusCode::TOO_MANY_REQUESTS)));
        let none = Err(ClientError::Connect {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            reason: "refused".into(),
        });
        assert!(is_failure(&none));
    }

    /// Answers every request on every connection with `status` and `body`, counting requests.
    async fn server(
        status: &'static str,
        body: &'static str,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    loop {
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            let Ok(n) = s.read(&mut buf).await else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                        got.clear();
                        let _ = seen.send(());
                        let answer = format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn target(addr: SocketAddr) -> Target {
        Target::resolve(&format!("http://{addr}")).await.unwrap()
    }

    /// A port nothing listens on: bound, then closed.
    async fn dead_addr() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_failed_request_is_sent_again_on_the_next_target() {
        let dead = target(dead_addr().await).await;
        let (busy_addr, mut busy_seen) = server("503 Service Unavailable", "").await;
        let (ok_addr, mut ok_seen) = server("200 OK", "ok").await;
        let targets = [dead, target(busy_addr).await, target(ok_addr).await];
        let mut route = Route::new(&targets, 0, Duration::from_secs(2), 5);
        let mut attempts = Vec::new();
        let answer = route
            .send(
                &Method::POST,
                |p| format!("{p}/x"),
                &[],
                &Bytes::from_static(b"{}"),
                true,
                |a| attempts.push(is_failure(&a.answer)),
            )
            .await
            .unwrap();
        assert_eq!((answer.0, &answer.1[..]), (StatusCode::OK, &b"ok"[..]));
        assert_eq!(attempts, [true, true, false], "refused, 503, then answered");
        assert_eq!(
            route.current(),
            2,
            "the slot stays on the target that answered"
        );
        busy_seen.recv().await.unwrap();
        ok_seen.recv().await.unwrap();
    }

    #[tokio::test]
    async fn a_request_not_safe_to_repeat_or_out_of_resends_keeps_its_failure() {
        let (busy_addr, mut busy_seen) = server("502 Bad Gateway", "").await;
        let (ok_addr, mut ok_seen) = server("200 OK", "ok").await;
        let targets = [target(busy_addr).await, target(ok_addr).await];
        let mut route = Route::new(&targets, 0, Duration::from_secs(2), 5);
        let (status, _) = route
            .send(
                &Method::POST,
                |p| format!("{p}/x"),
                &[],
                &Bytes::new(),
                false,
                |_| {},
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        busy_seen.recv().await.unwrap();
        assert!(ok_seen.try_recv().is_err(), "not sent again");

        let targets = [target(busy_addr).await];
        let mut route = Route::new(&targets, 0, Duration::from_secs(2), 2);
        let mut n = 0;
        let (status, _) = route
            .send(
                &Method::GET,
                |p| format!("{p}/x"),
                &[],
                &Bytes::new(),
                true,
                |_| n += 1,
            )
            .await
            .unwrap();
        assert_eq!(
            (status, n),
            (StatusCode::BAD_GATEWAY, 3),
            "sent once and re-sent twice"
        );
    }

    #[tokio::test]
    async fn routes_start_on_the_target_their_slot_names() {
        let a = target(dead_addr().await).await;
        let b = target(dead_addr().await).await;
        let targets = [a, b];
        assert_eq!(
            Route::new(&targets, 0, Duration::from_secs(1), 0).current(),
            0
        );
        assert_eq!(
            Route::new(&targets, 3, Duration::from_secs(1), 0).current(),
            1
        );
    }
}
