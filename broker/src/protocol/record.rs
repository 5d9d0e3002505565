//! A record as producers send it and consumers get it: key, dedup id, headers, payload, and
//! its encoding, shared by the client protocol, the replication requests and the log.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, DecodeError, Reader, WriteExt};

/// A record header: a name and an opaque value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: String,
    /// The value.
    pub value: Bytes,
}

/// A record as a producer sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Partitioning key; records with equal keys land in one partition, in order.
    pub key: Option<Bytes>,
    /// Deduplication id: a repeat within the dedup window returns the first offset.
    pub dedup_id: Option<String>,
    /// Headers.
    pub headers: Vec<Header>,
    /// The payload.
    pub payload: Bytes,
}

impl Record {
    /// A record with just a payload.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the dedup id.
    #[must_use]
    pub fn with_dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// Bytes this record takes in a produce body.
    pub fn encoded_size(&self) -> usize {
        codec::opt_bytes_size(self.key.as_deref())
            + codec::str_size(self.dedup_id.as_deref().unwrap_or(""))
            + headers_size(&self.headers)
            + codec::bytes_size(&self.payload)
    }

    /// Writes key, dedup id, headers and payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_opt_bytes(self.key.as_deref());
        out.put_str(self.dedup_id.as_deref().unwrap_or(""));
        encode_headers(&self.headers, out);
        out.put_bytes_field(&self.payload);
    }

    /// Reads what [`Record::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key = r.opt_bytes("record.key")?;
        let dedup = r.str("record.dedup_id")?;
        let headers = decode_headers(r)?;
        let payload = r.bytes("record.payload")?;
        Ok(Self {
            key,
            dedup_id: (!dedup.is_empty()).then_some(dedup),
            headers,
            payload,
        })
    }
}

/// Smallest encoded record: absent key, empty dedup id, no headers, empty payload.
pub(crate) const MIN_RECORD_BYTES: usize = 4 + 2 + 2 + 4;

fn headers_size(headers: &[Header]) -> usize {
    2 + headers
        .iter()
        .map(|h| codec::str_size(&h.name) + codec::bytes_size(&h.value))
        .sum::<usize>()
}

fn encode_headers(headers: &[Header], out: &mut BytesMut) {
    let n = headers.len().min(usize::from(u16::MAX));
    out.put_u16(u16::try_from(n).unwrap_or(u16::MAX));
    for h in headers.iter().take(n) {
        out.put_str(&h.name);
        out.put_bytes_field(&h.value);
    }
}

fn decode_headers(r: &mut Reader<'_>) -> Result<Vec<Header>, DecodeError> {
    let n = usize::from(r.u16("record.headers")?);
    if n.saturating_mul(6) > r.remaining() {
        return Err(DecodeError::Short {
            field: "record.headers",
            need: n * 6,
            have: r.remaining(),
            offset: r.position(),
        });
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str("header.name")?;
        let value = r.bytes("header.value")?;
        headers.push(Header { name, value });
    }
    Ok(headers)
}
