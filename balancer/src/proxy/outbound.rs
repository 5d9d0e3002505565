//! A request on its way to a backend, as [`super::attempt`] sends it and [`super::replay`]
//! rebuilds it.

use http::{Method, Request};

use crate::body::ReqBody;
use crate::upstream::codec::HeadForm;
use crate::upstream::conn::Upload;

/// A request on its way to a backend.
pub(super) enum Outbound {
    /// Plain HTTP/1.1: the balancer's own client over a pooled connection.
    Conn {
        /// Head and body.
        upload: Upload,
        /// Its method (the response's framing depends on it).
        method: Method,
        /// How to keep the response head.
        form: HeadForm,
    },
    /// A protocol switch: hyper's client on a fresh connection, which hands the
    /// connection over on 101.
    Upgrade(Request<ReqBody>),
}
