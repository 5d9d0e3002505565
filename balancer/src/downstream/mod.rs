//! The client-facing HTTP/1.1 server the balancer runs itself, for the requests that make
//! up nearly all traffic: HTTP/1.x, no body or a Content-Length body of at most
//! [`MAX_BUFFERED_BODY`] bytes, no protocol switch. It parses a head once, forwards the
//! request through the same proxy code as every other request ([`crate::proxy::respond`]),
//! and writes the response head and a small body in one write. The backend's response head
//! is not turned into a header map for it: its headers are copied through as the backend
//! sent them, minus the hop-by-hop and framing ones
//! ([`crate::upstream::codec::HeadForm::Raw`]).
//!
//! Everything else — HTTP/2 (ALPN or prior knowledge), chunked or larger request bodies,
//! `Expect: 100-continue`, `Upgrade`, CONNECT — goes to hyper's server: the connection is
//! handed over with the bytes already read put back in front ([`Prefixed`]), so hyper sees
//! the stream from the start of that request, as if it had served it all along.
//!
//! Why not hyper for these too: in the ticket stack's profile, hyper's server machinery
//! (its dispatcher, the body channel, a header map per response) cost the balancer about
//! as much CPU as forwarding itself, and its 8 KiB read and write buffers stayed with
//! every idle keep-alive connection.

pub mod codec;
mod conn;
mod prefixed;
#[cfg(any(test, feature = "test-util"))]
pub mod rewrite_check;

pub use codec::{HeadError, MAX_REQUEST_HEADERS};
pub use conn::{MAX_BUFFERED_BODY, Served, serve};
pub use prefixed::Prefixed;
