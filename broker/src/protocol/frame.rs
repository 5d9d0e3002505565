//! Length-prefixed framing.
//!
//! Request frame:
//!
//! | bytes | field            | notes                                        |
//! |-------|------------------|----------------------------------------------|
//! | 4     | length (`u32`)   | bytes after this field; at most the limit    |
//! | 2     | api key (`u16`)  | see [`ApiKey`](super::ApiKey)                |
//! | 2     | version (`u16`)  | protocol version of this request             |
//! | 4     | correlation id   | echoed in the response                       |
//! | rest  | body             | per api key                                  |
//!
//! Response frame: length (`u32`), correlation id (`u32`), error code (`u16`), body. A non-zero
//! error code is followed by a `str` message instead of the usual body.
//!
//! [`split_frame`] is the whole decoder: it returns `Ok(None)` while a frame is incomplete,
//! never waits for or allocates more than the limit, and rejects an oversized length as soon
//! as its four bytes have arrived.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the request header after the length prefix.
pub const REQUEST_HEADER_BYTES: usize = 8;
/// Bytes of the response header after the length prefix.
pub const RESPONSE_HEADER_BYTES: usize = 6;

/// Why a frame could not be split off the stream. Each of these leaves the stream
/// unframeable, so the connection is answered once and then closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over the limit.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Claimed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The length prefix is too small to hold a header.
    #[error("frame of {len} bytes is shorter than the {min}-byte header")]
    TooShort {
        /// Claimed length.
        len: usize,
        /// The header size.
        min: usize,
    },
}

/// The header of a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Raw api key (may be unknown to this build).
    pub api_key: u16,
    /// Protocol version of the request.
    pub version: u16,
    /// Chosen by the client, echoed in the response.
    pub correlation_id: u32,
}

/// The header of a response frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The request's correlation id.
    pub correlation_id: u32,
    /// 0 for success, else an [`ErrorCode`](super::ErrorCode).
    pub error_code: u16,
}

/// Splits one frame (without its length prefix) off the front of `buf`.
///
/// `Ok(None)` means "not all here yet"; `min_len` is the header size of the frame kind.
pub fn split_frame(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
    min_len: usize,
) -> Result<Option<Bytes>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(prefix);
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    if len < min_len {
        return Err(FrameError::TooShort { len, min: min_len });
    }
    if buf.len() < 4 + len {
        // Reserve at most what the (already checked) frame needs.
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Reads the request header off the front of a frame; `None` if the frame is too short
/// (which [`split_frame`] already rules out).
pub fn parse_request_header(frame: &Bytes) -> Option<(RequestHeader, Bytes)> {
    let h = frame.get(..REQUEST_HEADER_BYTES)?;
    let header = RequestHeader {
        api_key: u16::from_be_bytes([h[0], h[1]]),
        version: u16::from_be_bytes([h[2], h[3]]),
        correlation_id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
    };
    Some((header, frame.slice(REQUEST_HEADER_BYTES..)))
}

/// Reads the response header off the front of a frame.
pub fn parse_response_header(frame: &Bytes) -> Option<(ResponseHeader, Bytes)> {
    let h = frame.get(..RESPONSE_HEADER_BYTES)?;
    let header = ResponseHeader {
        correlation_id: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
        error_code: u16::from_be_bytes([h[4], h[5]]),
    };
    Some((header, frame.slice(RESPONSE_HEADER_BYTES..)))
}

/// Starts a request frame in `out`; returns the index of the length prefix for [`finish_frame`].
pub fn begin_request(out: &mut BytesMut, header: RequestHeader) -> usize {
    let at = out.len();
    out.put_u32(0);
    out.put_u16(header.api_key);
    out.put_u16(header.version);
    out.put_u32(header.correlation_id);
    at
}

/// Starts a response frame in `out`; returns the index of the length prefix.
pub fn begin_response(out: &mut BytesMut, header: ResponseHeader) -> usize {
    let at = out.len();
    out.put_u32(0);
    out.put_u32(header.correlation_id);
    out.put_u16(header.error_code);
    at
}

/// Writes the final length into the prefix at `at`.
pub fn finish_frame(out: &mut BytesMut, at: usize) {
    let len = out.len() - at - 4;
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    if let Some(prefix) = out.get_mut(at..at + 4) {
        prefix.copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_frames_wait() {
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(split_frame(&mut buf, 100, 8).unwrap(), None);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 9, 1, 2][..]);
        assert_eq!(split_frame(&mut buf, 100, 8).unwrap(), None);
        assert_eq!(buf.len(), 6, "nothing consumed");
    }

    #[test]
    fn oversized_length_is_rejected_before_its_bytes_arrive() {
        let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF][..]);
        let err = split_frame(&mut buf, 1024, 8).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 1024
            }
        );
        assert!(
            buf.capacity() < 1024,
            "no allocation for the claimed length"
        );
    }

    #[test]
    fn request_round_trip() {
        let mut out = BytesMut::new();
        let h = RequestHeader {
            api_key: 2,
            version: 1,
            correlation_id: 77,
        };
        let at = begin_request(&mut out, h);
        out.put_slice(b"body");
        finish_frame(&mut out, at);
        let frame = split_frame(&mut out, 100, REQUEST_HEADER_BYTES)
            .unwrap()
            .unwrap();
        let (got, body) = parse_request_header(&frame).unwrap();
        assert_eq!(got, h);
        assert_eq!(body.as_ref(), b"body");
        assert!(out.is_empty());
    }
}
