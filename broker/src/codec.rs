//! Big-endian primitives shared by the wire protocol and the on-disk record format.
//!
//! | type       | encoding                                                   |
//! |------------|------------------------------------------------------------|
//! | `u8..u64`  | big-endian, fixed width                                    |
//! | `str`      | `u16` byte length, then UTF-8 bytes                        |
//! | `bytes`    | `u32` byte length, then the bytes                          |
//! | `opt bytes`| `u32` byte length, `0xFFFF_FFFF` meaning "absent"          |
//! | `array<T>` | `u32` element count, then the elements                     |
//!
//! Decoding never trusts a length: every length is checked against the bytes that remain
//! *before* anything is allocated, and every failure names what was being read, how many
//! bytes it needed and how many there were.

use bytes::{BufMut, Bytes, BytesMut};

/// The `opt bytes` length that means "absent".
pub const ABSENT: u32 = u32::MAX;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body ended before a field did.
    #[error("{field}: need {need} bytes at offset {offset}, have {have}")]
    Short {
        /// The field being read.
        field: &'static str,
        /// Bytes it needed.
        need: usize,
        /// Bytes that remained.
        have: usize,
        /// Where in the body it started.
        offset: usize,
    },
    /// A field held a value that is not allowed.
    #[error("{field}: {reason} at offset {offset}")]
    Invalid {
        /// The field being read.
        field: &'static str,
        /// What was wrong with it.
        reason: &'static str,
        /// Where in the body it started.
        offset: usize,
    },
    /// Bytes were left after the last field.
    #[error("{extra} unexpected trailing bytes after the body")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

/// A cursor over a borrowed body; every read is bounds-checked.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Shared backing buffer, so that `bytes` fields can be sliced without copying.
    backing: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `bytes` fields are copied out.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            backing: None,
        }
    }

    /// A reader over a shared buffer; `bytes` fields are zero-copy slices of it.
    pub fn shared(buf: &'a Bytes) -> Self {
        Self {
            buf: buf.as_ref(),
            pos: 0,
            backing: Some(buf),
        }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Where the next read starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        let have = self.remaining();
        if n > have {
            return Err(DecodeError::Short {
                field,
                need: n,
                have,
                offset: self.pos,
            });
        }
        let start = self.pos;
        self.pos += n;
        self.buf.get(start..start + n).ok_or(DecodeError::Short {
            field,
            need: n,
            have,
            offset: start,
        })
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A `str`: `u16` length and UTF-8.
    pub fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let at = self.pos;
        let len = usize::from(self.u16(field)?);
        let raw = self.take(field, len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Invalid {
            field,
            reason: "not UTF-8",
            offset: at,
        })
    }

    fn slice_bytes(&self, raw: &'a [u8], start: usize) -> Bytes {
        match self.backing {
            Some(b) => b.slice(start..start + raw.len()),
            None => Bytes::copy_from_slice(raw),
        }
    }

    /// A `bytes` field: `u32` length and the bytes.
    pub fn bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)?;
        self.bytes_of_len(field, len)
    }

    /// The `len` bytes of a `bytes` field whose length was just read.
    fn bytes_of_len(&mut self, field: &'static str, len: u32) -> Result<Bytes, DecodeError> {
        let len = usize::try_from(len).map_err(|_| DecodeError::Invalid {
            field,
            reason: "length does not fit in memory",
            offset: self.pos,
        })?;
        let start = self.pos;
        let raw = self.take(field, len)?;
        Ok(self.slice_bytes(raw, start))
    }

    /// An `opt bytes` field.
    pub fn opt_bytes(&mut self, field: &'static str) -> Result<Option<Bytes>, DecodeError> {
        let len = self.u32(field)?;
        if len == ABSENT {
            return Ok(None);
        }
        self.bytes_of_len(field, len).map(Some)
    }

    /// An array count, checked so that `count * min_element_bytes` fits in what remains:
    /// a peer cannot make us reserve memory for elements it did not send.
    pub fn count(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = usize::try_from(self.u32(field)?).map_err(|_| DecodeError::Invalid {
            field,
            reason: "count does not fit in memory",
            offset: at,
        })?;
        let need = n.checked_mul(min_element_bytes.max(1));
        match need {
            Some(need) if need <= self.remaining() => Ok(n),
            _ => Err(DecodeError::Short {
                field,
                need: need.unwrap_or(usize::MAX),
                have: self.remaining(),
                offset: at,
            }),
        }
    }

    /// Fails if bytes remain.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { extra }),
        }
    }
}

/// Writes primitives into a `BytesMut`.
pub trait WriteExt {
    /// A `str`; longer strings are cut at 65,535 bytes on a character boundary.
    fn put_str(&mut self, s: &str);
    /// A `bytes` field.
    fn put_bytes_field(&mut self, b: &[u8]);
    /// An `opt bytes` field.
    fn put_opt_bytes(&mut self, b: Option<&[u8]>);
    /// An array count.
    fn put_count(&mut self, n: usize);
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

fn len_u32(n: usize) -> u32 {
    // Lengths above u32::MAX never reach here: frames are capped far below 4 GiB.
    u32::try_from(n).unwrap_or(u32::MAX - 1)
}

impl WriteExt for BytesMut {
    fn put_str(&mut self, s: &str) {
        let s = clip(s, usize::from(u16::MAX));
        self.put_u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
        self.put_slice(s.as_bytes());
    }

    fn put_bytes_field(&mut self, b: &[u8]) {
        self.put_u32(len_u32(b.len()));
        self.put_slice(b);
    }

    fn put_opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.put_bytes_field(b),
            None => self.put_u32(ABSENT),
        }
    }

    fn put_count(&mut self, n: usize) {
        self.put_u32(len_u32(n));
    }
}

/// Encoded size of a `str` field.
pub fn str_size(s: &str) -> usize {
    2 + clip(s, usize::from(u16::MAX)).len()
}

/// Encoded size of a `bytes` field.
pub fn bytes_size(b: &[u8]) -> usize {
    4 + b.len()
}

/// Encoded size of an `opt bytes` field.
pub fn opt_bytes_size(b: Option<&[u8]>) -> usize {
    4 + b.map_or(0, <[u8]>::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut b = BytesMut::new();
        b.put_u8(7);
        b.put_u16(513);
        b.put_u32(70_000);
        b.put_u64(1 << 40);
        b.put_str("héllo");
        b.put_bytes_field(b"abc");
        b.put_opt_bytes(None);
        b.put_opt_bytes(Some(b""));
        let frozen = b.freeze();
        let mut r = Reader::shared(&frozen);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("b").unwrap(), 513);
        assert_eq!(r.u32("c").unwrap(), 70_000);
        assert_eq!(r.u64("d").unwrap(), 1 << 40);
        assert_eq!(r.str("e").unwrap(), "héllo");
        assert_eq!(r.bytes("f").unwrap().as_ref(), b"abc");
        assert_eq!(r.opt_bytes("g").unwrap(), None);
        assert_eq!(r.opt_bytes("h").unwrap().unwrap().len(), 0);
        r.finish().unwrap();
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let mut b = BytesMut::new();
        b.put_u32(u32::MAX - 1);
        let err = Reader::new(&b).bytes("payload").unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Short {
                    field: "payload",
                    ..
                }
            ),
            "{err}"
        );
        let mut b = BytesMut::new();
        b.put_u32(1_000_000);
        let err = Reader::new(&b).count("records", 8).unwrap_err();
        assert!(matches!(err, DecodeError::Short { .. }));
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("ééé", 3), "é");
        assert_eq!(clip("abc", 10), "abc");
    }
}
