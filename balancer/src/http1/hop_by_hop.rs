//! The hop-by-hop headers (RFC 9110 §7.6.1, plus legacy ones): headers that describe one
//! connection and are never forwarded. Both the header-map path ([`crate::proxy::headers`])
//! and the byte paths of the balancer's own codecs recognise them from here.

use http::header::{self, HeaderName};

const HOP_COUNT: usize = 8;

/// The hop-by-hop headers. Index 0 must stay `Connection` and the order must match
/// [`hop_index`].
pub(crate) static HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Position of `name` in [`HOP_BY_HOP`], by comparing its text: a length switch settles
/// almost every ordinary header with no comparison at all.
pub(crate) fn hop_index(name: &HeaderName) -> Option<usize> {
    let text = name.as_str();
    let i = match text.len() {
        2 => 5,
        7 => 6,
        10 if text == "connection" => return Some(0),
        10 => 1,
        16 => 2,
        17 => 7,
        18 => 3,
        19 => 4,
        _ => return None,
    };
    HOP_BY_HOP
        .get(i)
        .is_some_and(|h| h.as_str() == text)
        .then_some(i)
}

/// A hop-by-hop header's name, in any case, given as bytes (a backend's raw response
/// head): the hop-by-hop names `proxy::headers::strip_hop_by_hop` removes, and `Upgrade`.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    match name.len() {
        7 if name.eq_ignore_ascii_case(b"upgrade") => true,
        2 | 7 | 10 | 16 | 17 | 18 | 19 => HOP_BY_HOP
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_index_finds_exactly_the_hop_by_hop_names() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name), Some(i), "{name}");
        }
        for other in ["upgrade", "referer", "x-kept", "host", "tx", "x-connection"] {
            assert_eq!(hop_index(&HeaderName::from_static(other)), None, "{other}");
        }
        // The byte form, for raw response heads: any case, and Upgrade too.
        for name in HOP_BY_HOP.iter() {
            assert!(is_hop_by_hop_name(
                name.as_str().to_ascii_uppercase().as_bytes()
            ));
        }
        assert!(is_hop_by_hop_name(b"Upgrade"));
        for other in [
            "referer",
            "x-kept",
            "host",
            "tx",
            "x-connection",
            "content-length",
        ] {
            assert!(!is_hop_by_hop_name(other.as_bytes()), "{other}");
        }
    }
}
