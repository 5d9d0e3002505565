//! The HTTP/1.1 head pieces both of the balancer's own codecs share — its server
//! ([`crate::downstream`], request heads) and its client ([`crate::upstream::codec`],
//! response heads): where a head ends in a read buffer ([`head`]), the framing facts noted
//! in the one pass over a head's headers ([`facts`]), which headers are hop-by-hop
//! ([`hop_by_hop`]), and a response head kept as the bytes received ([`RawHead`]), which the
//! client produces and the server writes out.
//!
//! Sans I/O, and below both codecs: nothing here imports the rest of the crate.

pub mod facts;
pub mod head;
pub mod hop_by_hop;

pub(crate) use facts::HeadFacts;
pub(crate) use head::{find_head_end, skip_blank_lines};

/// A response head kept as the backend sent it, for the balancer's own server.
#[derive(Debug, Clone)]
pub struct RawHead {
    /// The headers to pass on, as received (`name: value` CRLF each): all but the
    /// hop-by-hop ones and the framing ones (`Content-Length`, `Transfer-Encoding`), which
    /// the server writes itself.
    pub headers: Vec<u8>,
    /// The `Content-Length` it carried (passed on for HEAD and 304, where it describes the
    /// resource rather than this body).
    pub length: Option<u64>,
    /// It carries `Retry-After`.
    pub retry_after: bool,
    /// It carries `Date`.
    pub date: bool,
}
