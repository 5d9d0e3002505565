//! The two ways the balancer writes a backend's request head compared: from the client's
//! bytes (the balancer's own server, `encode_upstream_head`) and through a header map (the
//! proxy's `rewrite_parts`, then the upstream encoder). They must send the same request. The
//! codec's property test and the `request_head` fuzz target both hold them to it.

use bytes::{Bytes, BytesMut};
use http::HeaderValue;

use super::codec::{Forwarding, Front, decode_request_head, find_head};
use crate::body::InBody;

/// A request head as a backend reads it: the request line, then every header (name lower-
/// cased, value as text) in order.
pub type HeadView = (String, Vec<(String, String)>);

/// Parses `head` with `httparse`; `None` when it is not one whole request head.
pub fn upstream_view(head: &[u8]) -> Option<HeadView> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    if !req.parse(head).ok()?.is_complete() {
        return None;
    }
    let line = format!("{} {} 1.{}", req.method?, req.path?, req.version?);
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Some((line, headers))
}

/// `view` sorted by header name (same-name headers keep their order), with a request id other
/// than `client_id` replaced by a marker: each way makes its own fresh one.
pub fn normalized(view: HeadView, client_id: Option<&str>) -> HeadView {
    let (line, mut headers) = view;
    for (k, v) in &mut headers {
        if k == "x-request-id" && Some(v.as_str()) != client_id {
            *v = "<fresh>".into();
        }
    }
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    (line, headers)
}

/// The one request head at the front of `input`, split off, if there is one.
fn one_head(input: &[u8]) -> Option<Bytes> {
    let mut buf = BytesMut::from(input);
    let mut scanned = 0;
    match find_head(&mut buf, &mut scanned, 64 * 1024, true) {
        Ok(Front::Head(n)) => Some(buf.split_to(n).freeze()),
        _ => None,
    }
}

/// What each way sends for the head at the front of `input`, from client `client`: the byte
/// way's head (when the head qualifies for it) and the map way's (when the proxy forwards
/// it). `None` when the balancer refuses the head.
pub fn both_ways(input: &[u8], client: &HeaderValue) -> Option<(Option<Bytes>, Option<Bytes>)> {
    let head = one_head(input)?;
    let fwd = |encode| Forwarding {
        client,
        tls: false,
        encode,
    };
    let bytes = decode_request_head(&head, &fwd(true)).ok()?;
    let encoded = match bytes.into_request(Bytes::new()).into_body() {
        InBody::Encoded { head, .. } => Some(head),
        _ => None,
    };
    let map = decode_request_head(&head, &fwd(false)).ok()?;
    let (mut parts, _) = map.into_request(Bytes::new()).into_parts();
    let mapped = crate::proxy::forward::rewrite_parts(&mut parts, client, false, false)
        .ok()
        .map(|()| {
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            crate::upstream::codec::encode_request_head(&parts.method, path, &parts.headers, false)
        });
    Some((encoded, mapped))
}

/// Checks that the two ways agree on the head at the front of `input`: whatever the byte way
/// writes, the map way writes too, and a backend reads the same request from both.
///
/// # Errors
/// What differs.
pub fn check(input: &[u8]) -> Result<(), String> {
    let client = HeaderValue::from_static("10.0.0.9");
    let Some((Some(encoded), mapped)) = both_ways(input, &client) else {
        return Ok(());
    };
    let Some(mapped) = mapped else {
        return Err("the byte way wrote a head the map way refuses".into());
    };
    let by_bytes = upstream_view(&encoded).ok_or("the byte way wrote an unparseable head")?;
    let by_map = upstream_view(&mapped).ok_or("the map way wrote an unparseable head")?;
    // A client's request id both keep: the one the byte way sent on, if it is not fresh.
    let client_id = by_map
        .1
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v.clone())
        .filter(|id| {
            by_bytes
                .1
                .iter()
                .any(|(k, v)| k == "x-request-id" && v == id)
        });
    let (a, b) = (
        normalized(by_bytes, client_id.as_deref()),
        normalized(by_map, client_id.as_deref()),
    );
    if a == b {
        Ok(())
    } else {
        Err(format!("bytes {a:?} != map {b:?}"))
    }
}
