//! The request path: validate the client's request, choose a backend, forward it over a
//! pooled connection (retrying on another backend when it never reached one, or when it may
//! safely be sent twice), and stream the response back. [`headers`] holds the pure header
//! rewriting and framing checks, [`error`] the one mapping from failures to statuses,
//! [`forward`] the request path (preparing a request and shaping its answer), `outbound` the
//! request as it goes out, `attempt` the sending, retries and deadlines, `replay` which
//! requests may be sent again after a backend received them,
//! [`response_body`] the body of every answer, and [`ConnInfo`] what every step knows of the
//! client connection.

mod attempt;
mod conn_info;
pub mod error;
pub mod forward;
pub mod headers;
mod outbound;
mod replay;
pub mod response_body;
pub mod upgrade;

pub use conn_info::ConnInfo;
pub use error::{ProxyError, Side};
pub use forward::{handle, respond};
pub use response_body::RespBody;
