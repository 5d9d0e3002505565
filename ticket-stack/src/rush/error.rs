//! Why a rush could not run.

use ticket_svc::domain::EventId;

/// Why a rush could not run.
#[derive(Debug, thiserror::Error)]
pub enum RushError {
    /// The target URL is not `http://HOST:PORT[/PREFIX]` or does not resolve.
    #[error("bad target {url:?}: {reason}")]
    BadTarget {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range.
    #[error("bad setting: {0}")]
    BadConfig(String),
    /// The event could not be created.
    #[error("could not create the event: {0}")]
    CreateEvent(String),
    /// The crowd's mailbox could not listen.
    #[error("the mailbox for login codes cannot listen: {0}")]
    Mailbox(std::io::Error),
    /// The event could not be read.
    #[error("could not read event {event}: {reason}")]
    Event {
        /// The event.
        event: EventId,
        /// What happened.
        reason: String,
    },
}
