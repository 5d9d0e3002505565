//! What the proxy knows about the client connection a request came on: the one value the
//! listener builds per connection and every step of the request path reads (forwarding,
//! sending and retrying, the balancer's own HTTP/1.1 server). It sits below all of them and
//! imports none of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use http::HeaderValue;

use crate::state::BalancerState;

/// What the proxy knows about the client connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The balancer's shared state.
    pub shared: Arc<BalancerState>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Arrived over TLS.
    pub is_tls: bool,
    /// Worker runtime index (selects the connection pool).
    pub worker: usize,
    /// The client's IP as a header value, rendered once for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// Raised by [`crate::smuggling::GuardedIo`] when a head carried both Content-Length and
    /// Transfer-Encoding (hyper hides the conflict from the request itself).
    pub ambiguous: Arc<AtomicBool>,
}
