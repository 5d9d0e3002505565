//! The flags of an API's front door (`ticket-svc api`, and any binary serving the API, such as
//! the benches' `naive_api`): signing keys, organizer tokens, the login sender, the session's
//! length.

use std::time::Duration;

/// Who may do what on an API: its signing keys, organizer tokens and login sender.
#[derive(Debug, clap::Args)]
pub struct AccessArgs {
    /// A key that signs buyer sessions and login codes, as ID:SECRET (the secret at least 32
    /// bytes; `openssl rand -hex 32`). Every API instance needs the same keys. Given several
    /// times (or comma-separated in TICKET_SIGNING_KEYS), the first signs and all verify: rotate
    /// by adding the new key second, then moving it first, then dropping the old one once its
    /// sessions have expired.
    #[arg(
        long,
        env = "TICKET_SIGNING_KEYS",
        hide_env_values = true,
        required = true
    )]
    signing_key: Vec<String>,
    /// A token that organizer routes (POST /events) accept as `Authorization: Bearer TOKEN`, 16
    /// to 256 visible characters. Several (or comma-separated in TICKET_ORGANIZER_TOKENS) for
    /// rotation. None: organizer routes answer 403.
    #[arg(long, env = "TICKET_ORGANIZER_TOKENS", hide_env_values = true)]
    organizer_token: Vec<String>,
    /// Where login codes go: `log` (the API's log; development only) or an http:// URL that
    /// is POSTed {"email","code","expires_at"} (an e-mail service's webhook).
    #[arg(long, default_value = "log", env = "TICKET_LOGIN_SENDER")]
    login_sender: String,
    /// How long a buyer session lasts.
    #[arg(long, default_value = "12h", value_parser = broker::config::parse_duration)]
    session_ttl: Duration,
}

impl AccessArgs {
    /// The gatekeeper these flags describe, warning in the log about what is off or unsafe.
    ///
    /// # Errors
    /// A bad key, token or sender, saying which.
    pub fn gatekeeper(&self) -> anyhow::Result<ticket_svc::access::Access> {
        let config = ticket_svc::access::AccessConfig::from_flags(
            &self.signing_key,
            &self.organizer_token,
            &self.login_sender,
            self.session_ttl,
        )?;
        if !config.organizers.any() {
            tracing::warn!("no --organizer-token: organizer routes (POST /events) answer 403");
        }
        if config.sender.name() == "log" {
            tracing::warn!("login codes go to this log (--login-sender log): for development only");
        }
        Ok(ticket_svc::access::Access::new(config))
    }
}
