//! Arbitrary header lines under a request line, rewritten as the proxy rewrites a request for a
//! backend: no hop-by-hop header survives (nor one `Connection` names, but the forwarding
//! headers the proxy then sets itself), `X-Forwarded-For` ends with the client,
//! `X-Forwarded-Proto` and `-Host` are the proxy's own, and exactly one sane request id is
//! sent.
#![no_main]

use balancer::http1::hop_by_hop::is_hop_by_hop_name;
use balancer::proxy::headers::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID, ensure_request_id,
    is_sane_request_id, set_forwarded, strip_hop_by_hop,
};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut text = b"GET / HTTP/1.1\r\n".to_vec();
    text.extend_from_slice(data);
    text.extend_from_slice(b"\r\n\r\n");
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    if !matches!(req.parse(&text), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        headers.append(name, value);
    }
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !matches!(t.as_str(), "" | "close" | "keep-alive" | "upgrade"))
        // The proxy adds its own of these after the client's are gone.
        .filter(|t| {
            ![
                &X_FORWARDED_FOR,
                &X_FORWARDED_PROTO,
                &X_FORWARDED_HOST,
                &X_REQUEST_ID,
            ]
            .iter()
            .any(|h| h.as_str() == t)
        })
        .collect();
    let client = HeaderValue::from_static("10.0.0.9");
    let host = HeaderValue::from_static("shop");
    strip_hop_by_hop(&mut headers, false);
    set_forwarded(&mut headers, &client, "https", Some(host.clone()));
    ensure_request_id(&mut headers);
    for name in headers.keys() {
        assert!(
            !is_hop_by_hop_name(name.as_str().as_bytes()),
            "{name} survived"
        );
        assert_ne!(name, header::UPGRADE);
        assert!(
            !named.iter().any(|n| n == name.as_str()),
            "{name} was named in Connection"
        );
    }
    let chain = headers.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>();
    assert_eq!(chain.len(), 1, "one X-Forwarded-For");
    assert!(chain[0].as_bytes().ends_with(b"10.0.0.9"));
    assert_eq!(
        headers.get(&X_FORWARDED_PROTO).map(HeaderValue::as_bytes),
        Some(&b"https"[..])
    );
    assert_eq!(headers.get(&X_FORWARDED_HOST), Some(&host));
    let ids = headers.get_all(&X_REQUEST_ID).iter().collect::<Vec<_>>();
    assert!(
        ids.len() == 1 && is_sane_request_id(ids[0].as_bytes()),
        "{ids:?}"
    );
});
