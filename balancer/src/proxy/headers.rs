//! Pure header logic: framing checks against request smuggling, hop-by-hop removal, the
//! `X-Forwarded-*` family, request ids, and the client key for rate limiting.
//!
//! Framing invariant: a request is forwarded only when its body length is unambiguous. Both
//! `Content-Length` and `Transfer-Encoding`, several differing `Content-Length`s, a
//! non-numeric length, or a `Transfer-Encoding` whose last coding is not `chunked` are all
//! refused with 400. (hyper already refuses most of these while parsing; checking again here
//! keeps the guarantee independent of the parser and covers h2, where `Transfer-Encoding`
//! is not allowed at all.)

use std::cell::RefCell;
use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::http1::hop_by_hop::{HOP_BY_HOP, hop_index};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `Idempotency-Key` (IETF httpapi draft): a request carrying one may be sent twice.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Longest client-supplied request id we pass on; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Why a request's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Both Content-Length and Transfer-Encoding.
    #[error("both Content-Length and Transfer-Encoding")]
    BothLengths,
    /// Several Content-Length values that differ.
    #[error("conflicting Content-Length headers")]
    ConflictingLength,
    /// A Content-Length that is not a number.
    #[error("invalid Content-Length")]
    InvalidLength,
    /// Transfer-Encoding not ending in chunked.
    #[error("Transfer-Encoding must end with chunked")]
    BadTransferEncoding,
    /// Transfer-Encoding in HTTP/2.
    #[error("Transfer-Encoding is not allowed in HTTP/2")]
    TransferEncodingInH2,
}

/// The declared Content-Length, after [`check_framing`] passed.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Refuses ambiguous body framing (see the module docs); returns the declared
/// Content-Length, if any.
pub fn check_framing(headers: &HeaderMap, is_h2: bool) -> Result<Option<u64>, FramingError> {
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let text = v.to_str().map_err(|_| FramingError::InvalidLength)?;
        // A single header may also carry a comma-separated list; every element must agree.
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::InvalidLength);
            }
            let n: u64 = part.parse().map_err(|_| FramingError::InvalidLength)?;
            match length {
                Some(prev) if prev != n => return Err(FramingError::ConflictingLength),
                _ => length = Some(n),
            }
        }
    }
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if te.peek().is_some() {
        if is_h2 {
            return Err(FramingError::TransferEncodingInH2);
        }
        if length.is_some() {
            return Err(FramingError::BothLengths);
        }
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .rfind(|s| !s.is_empty());
        if !last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")) {
            return Err(FramingError::BadTransferEncoding);
        }
    }
    Ok(length)
}

/// The request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// A `Connection` token that names no header to remove.
fn is_plain_connection_token(t: &str) -> bool {
    t.is_empty()
        || t.eq_ignore_ascii_case("keep-alive")
        || t.eq_ignore_ascii_case("close")
        || t.eq_ignore_ascii_case("upgrade")
}

/// Removes hop-by-hop headers and every header named in `Connection`. With `keep_upgrade`
/// the `Connection: upgrade` / `Upgrade` pair survives (for protocol switches).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) header names finds which hop-by-hop headers are present
    // (a bit each); only those found are removed (each removal hashes).
    let mut present: u16 = 0;
    let mut has_upgrade = false;
    for k in headers.keys() {
        if let Some(i) = hop_index(k) {
            present |= 1 << i;
        } else if k == header::UPGRADE {
            has_upgrade = true;
        }
    }
    if !keep_upgrade && !has_upgrade && present == 0 {
        return;
    }
    // Headers named in Connection are hop-by-hop too. The usual tokens (keep-alive, close,
    // upgrade) name nothing extra, so the list is built only for unusual ones.
    if present & 1 != 0 {
        let tokens = || {
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|s| s.split(','))
                .map(str::trim)
        };
        if !tokens().all(is_plain_connection_token) {
            let named: Vec<HeaderName> = tokens()
                .filter(|t| !is_plain_connection_token(t))
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
                .collect();
            for name in named {
                headers.remove(&name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if has_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Appends `client` to `X-Forwarded-For` (one combined header) and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    match headers.entry(X_FORWARDED_FOR.clone()) {
        // The common case: no chain yet, and the client's address is rendered once per
        // connection, so this is a reference-count bump rather than an allocation.
        Entry::Vacant(slot) => {
            slot.insert(client.clone());
        }
        Entry::Occupied(mut chain) => {
            let mut joined = chain
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<&str>>()
                .join(", ");
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(client.to_str().unwrap_or_default());
            let value = HeaderValue::from_str(&joined).unwrap_or_else(|_| {
                // Only reachable with a garbage previous value: start the chain afresh.
                client.clone()
            });
            chain.insert(value);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
}

/// The client address as a header value (rendered once per connection).
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A client's `X-Request-Id` worth passing on: 1 to [`MAX_REQUEST_ID_LEN`] visible ASCII
/// characters.
pub fn is_sane_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_REQUEST_ID_LEN && value.iter().all(u8::is_ascii_graphic)
}

/// Keeps a sane client `X-Request-Id` or sets a fresh random one: the backend gets exactly
/// one (a client's second one is dropped). (Nothing is returned: cloning a freshly made value
/// costs an allocation, and the proxy does not need it.)
pub fn ensure_request_id(headers: &mut HeaderMap) {
    match headers.entry(X_REQUEST_ID.clone()) {
        Entry::Occupied(mut e) => {
            let first_sane = is_sane_request_id(e.get().as_bytes());
            if !first_sane {
                e.insert(new_request_id());
            } else if e.iter().nth(1).is_some() {
                let first = e.get().clone();
                e.insert(first);
            }
        }
        Entry::Vacant(e) => {
            e.insert(new_request_id());
        }
    }
}

thread_local! {
    /// Request ids need to be unique, not secret: a small fast generator per thread, seeded
    /// from the OS-seeded thread RNG, costs a few instructions where `rand::rng()` (ChaCha
    /// with reseeding checks) cost ~600 per request.
    static ID_RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// 128 random bits as 32 hex digits.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = ID_RNG
        .with(|r| r.borrow_mut().random::<u128>())
        .to_le_bytes();
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [hi, lo] = pair {
            *hi = HEX[usize::from(b >> 4)];
            *lo = HEX[usize::from(b & 0x0f)];
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The address the rate limiter charges: the peer, or — when the peer is a trusted proxy —
/// the rightmost `X-Forwarded-For` entry that is not itself trusted.
pub fn client_key(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(&peer) {
        return peer;
    }
    let entries: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    entries
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn framing_rules() {
        assert!(check_framing(&map(&[("content-length", "5")]), false).is_ok());
        assert!(
            check_framing(
                &map(&[("content-length", "5"), ("content-length", "5")]),
                false
            )
            .is_ok()
        );
        assert_eq!(
            check_framing(
                &map(&[("content-length", "5"), ("content-length", "6")]),
                false
            ),
            Err(FramingError::ConflictingLength)
        );
        assert_eq!(
            check_framing(&map(&[("content-length", "5, 6")]), false),
            Err(FramingError::ConflictingLength)
        );
        assert_eq!(
            check_framing(&map(&[("content-length", "+5")]), false),
            Err(FramingError::InvalidLength)
        );
        assert_eq!(
            check_framing(
                &map(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
                false
            ),
            Err(FramingError::BothLengths)
        );
        assert_eq!(
            check_framing(&map(&[("transfer-encoding", "chunked, gzip")]), false),
            Err(FramingError::BadTransferEncoding)
        );
        assert!(check_framing(&map(&[("transfer-encoding", "gzip, chunked")]), false).is_ok());
        assert_eq!(
            check_framing(&map(&[("transfer-encoding", "chunked")]), true),
            Err(FramingError::TransferEncodingInH2)
        );
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        let mut u = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&u));
        strip_hop_by_hop(&mut u, true);
        assert_eq!(u.get("upgrade").unwrap(), "websocket");
        assert_eq!(u.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = map(&[("x-forwarded-for", "1.1.1.1")]);
        set_forwarded(
            &mut h,
            &ip_header_value("2.2.2.2".parse().unwrap()),
            "https",
            Some(HeaderValue::from_static("tickets.example")),
        );
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "1.1.1.1, 2.2.2.2");
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(h.get(&X_FORWARDED_HOST).unwrap(), "tickets.example");
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = map(&[("x-request-id", "abc-123")]);
        ensure_request_id(&mut h);
        assert_eq!(h.get(&X_REQUEST_ID).unwrap(), "abc-123");
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h.get(&X_REQUEST_ID).unwrap().clone();
        assert_eq!(id.len(), 32);
        assert_eq!(h.get(&X_REQUEST_ID).unwrap(), &id);
        // Exactly one goes on: the first when it is sane (found by the request_head fuzzer),
        // else a fresh one.
        let mut h = map(&[("x-request-id", "ok-1"), ("x-request-id", "has space")]);
        ensure_request_id(&mut h);
        assert_eq!(
            h.get_all(&X_REQUEST_ID).iter().collect::<Vec<_>>(),
            ["ok-1"]
        );
        let mut h = map(&[("x-request-id", "has space"), ("x-request-id", "ok-1")]);
        ensure_request_id(&mut h);
        let ids: Vec<_> = h.get_all(&X_REQUEST_ID).iter().collect();
        assert_eq!((ids.len(), ids[0].len()), (1, 32));
    }

    #[test]
    fn client_key_trusts_only_listed_proxies() {
        let h = map(&[("x-forwarded-for", "9.9.9.9, 10.0.0.2")]);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let inner: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_key(proxy, &h, &[]), proxy);
        assert_eq!(client_key(proxy, &h, &[proxy]), inner);
        assert_eq!(
            client_key(proxy, &h, &[proxy, inner]),
            "9.9.9.9".parse::<IpAddr>().unwrap()
        );
    }
}
