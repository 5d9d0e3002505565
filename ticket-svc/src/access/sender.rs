//! How a login code reaches the buyer: a [`CodeSender`]. The API ships two: [`LogSender`]
//! (development: the code goes to the log) and [`WebhookSender`] (POSTs the code as JSON to a
//! URL: an e-mail service's webhook, or a load generator's mailbox). A real mailer is a third
//! implementation of the trait; the sale does not change.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use super::error::AccessConfigError;
use super::identity::Email;
use crate::domain::UnixMillis;

/// A code to deliver.
#[derive(Debug, Clone, Copy)]
pub struct LoginCode<'a> {
    /// Where to.
    pub email: &'a Email,
    /// The code.
    pub code: &'a str,
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
}

/// What a sender returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Delivers login codes.
pub trait CodeSender: Send + Sync + 'static {
    /// Delivers one code; an error says why it was not (the buyer is answered 503 and may ask
    /// again).
    fn send<'a>(&'a self, code: LoginCode<'a>) -> SendFuture<'a>;

    /// A short name for logs.
    fn name(&self) -> &'static str;
}

/// Writes each code to the log at info level. For development: anyone who reads the log can
/// log in as anyone.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSender;

impl CodeSender for LogSender {
    fn send<'a>(&'a self, code: LoginCode<'a>) -> SendFuture<'a> {
        tracing::info!(email = %code.email, code = code.code, "login code (log sender)");
        Box::pin(std::future::ready(Ok(())))
    }

    fn name(&self) -> &'static str {
        "log"
    }
}

/// POSTs `{"email","code","expires_at"}` (RFC 3339) to a URL; any 2xx within 2 s is sent.
pub struct WebhookSender {
    url: hyper::Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// How long a webhook may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);

impl WebhookSender {
    /// A sender to `url` (`http://` only: run a TLS-terminating relay beside the API for an
    /// https endpoint).
    ///
    /// # Errors
    /// A URL that is not `http://host[:port]/...`.
    pub fn new(url: &str) -> Result<Self, AccessConfigError> {
        let bad = || AccessConfigError::BadSender {
            spec: url.to_owned(),
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(bad());
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(WEBHOOK_TIMEOUT));
        Ok(Self {
            url: uri,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    email: &'a str,
    code: &'a str,
    expires_at: UnixMillis,
}

impl CodeSender for WebhookSender {
    fn send<'a>(&'a self, code: LoginCode<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&WebhookBody {
                email: code.email.as_str(),
                code: code.code,
                expires_at: UnixMillis(code.expires_at.saturating_mul(1000)),
            })
            .map_err(|e| e.to_string())?;
            let request = hyper::Request::post(self.url.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let sent = tokio::time::timeout(WEBHOOK_TIMEOUT, async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| format!("webhook: {e}"))?;
                let status = response.status();
                // Read the body so the connection goes back to the pool.
                let _ = response.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("webhook answered {status}"))
                }
            })
            .await;
            sent.unwrap_or_else(|_| Err(format!("webhook: no answer within {WEBHOOK_TIMEOUT:?}")))
        })
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

/// The sender a `--login-sender` value names: `log`, or an `http://` URL for a webhook.
///
/// # Errors
/// Anything else.
pub fn sender_from_spec(spec: &str) -> Result<Box<dyn CodeSender>, AccessConfigError> {
    if spec == "log" {
        Ok(Box::new(LogSender))
    } else {
        Ok(Box::new(WebhookSender::new(spec)?))
    }
}
